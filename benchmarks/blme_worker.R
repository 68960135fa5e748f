# Fit one benchmark model with blme (blmer / bglmer by ML); same protocol as lme4_worker.R (the
# first fit is a warm-up; only the blmer()/bglmer() call is timed, with system.time).
# usage: Rscript benchmarks/blme_worker.R CSV "LABEL,COLUMNS" "FORMULA" REPEATS FAMILY COV_PRIOR FIXEF_PRIOR
# COV_PRIOR and FIXEF_PRIOR are R source text ("wishart", "normal", "NULL").
out <- function(...) { cat(..., "\n", sep = ""); flush(stdout()) }
if (!suppressWarnings(suppressMessages(requireNamespace("blme", quietly = TRUE)))) quit(status = 3)
suppressMessages(library(blme))
args <- commandArgs(TRUE)
labels <- strsplit(args[2], ",")[[1]]
header <- names(read.csv(args[1], nrows = 1))
classes <- setNames(rep("character", length(labels)), labels)[labels %in% header]
d <- read.csv(args[1], colClasses = classes)
for (l in names(classes)) d[[l]] <- factor(d[[l]])
form <- as.formula(args[3])
reps <- as.integer(args[4])
fam <- args[5]
cov_prior <- parse(text = args[6])[[1]]
fixef_prior <- parse(text = args[7])[[1]]
fit <- function() {
  call <- if (fam == "gaussian") {
    list(quote(blmer), formula = form, data = quote(d), REML = FALSE)
  } else {
    list(quote(bglmer), formula = form, data = quote(d), family = as.name(fam))
  }
  call["cov.prior"] <- list(cov_prior)
  call["fixef.prior"] <- list(fixef_prior)
  suppressWarnings(suppressMessages(eval(as.call(call))))
}
out("@ready")
out("@fit 0")
m <- fit()
times <- numeric(reps)
for (i in seq_len(reps)) {
  out("@fit ", i)
  times[i] <- system.time(m <- fit())[["elapsed"]]
}
# what blme minimized: the criterion without the prior (devcomp's dev) plus the prior deviance
penalty <- m@devcomp$cmp[["penalty"]]
objective <- m@devcomp$cmp[["dev"]] + penalty
num <- function(x) paste(sprintf("%.10g", x), collapse = ", ")
fe <- fixef(m)
conv <- m@optinfo$conv$lme4$messages
out(sprintf(paste0('@result {"version": "%s", "lme4": "%s", "times": [%s], "objective": %.10f, "penalty": %.10f, ',
                   '"fixef": {%s}, "theta": [%s], "converged": %s}'),
            packageVersion("blme"), packageVersion("lme4"), num(times), objective, penalty,
            paste(sprintf('"%s": %.10g', names(fe), fe), collapse = ", "), num(getME(m, "theta")),
            if (length(conv)) "false" else "true"))
