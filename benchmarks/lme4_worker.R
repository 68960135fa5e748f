# Fit one benchmark model with lme4 by ML; same protocol as worker.py (first fit is a warm-up).
# usage: Rscript benchmarks/lme4_worker.R CSV "LABEL,COLUMNS" "FORMULA" REPEATS [FAMILY [ZIFORMULA]]
# (negative_binomial: glmer.nb, theta estimated; a zero-inflation formula: lme4 has none, status 4)
# Only the lmer()/glmer() call is timed (system.time), so R's start-up and read.csv are not.
out <- function(...) { cat(..., "\n", sep = ""); flush(stdout()) }
if (!suppressWarnings(suppressMessages(requireNamespace("lme4", quietly = TRUE)))) quit(status = 3)
suppressMessages(library(lme4))
args <- commandArgs(TRUE)
labels <- strsplit(args[2], ",")[[1]]
header <- names(read.csv(args[1], nrows = 1))
classes <- setNames(rep("character", length(labels)), labels)[labels %in% header]
d <- read.csv(args[1], colClasses = classes)
for (l in names(classes)) d[[l]] <- factor(d[[l]])
form <- as.formula(args[3])
reps <- as.integer(args[4])
fam <- if (length(args) >= 5) args[5] else "gaussian"
if (length(args) >= 6 && nzchar(args[6])) quit(status = 4)
fit <- function() {
  if (fam == "gaussian") lmer(form, d, REML = FALSE)
  else if (fam == "negative_binomial") glmer.nb(form, d)
  else glmer(form, d, family = get(fam)())
}
out("@ready")
out("@fit 0")
m <- fit()
times <- numeric(reps)
for (i in seq_len(reps)) {
  out("@fit ", i)
  times[i] <- system.time(m <- fit())[["elapsed"]]
}
hwm <- grep("^VmHWM:", readLines("/proc/self/status"), value = TRUE)
peak <- as.numeric(strsplit(trimws(sub("VmHWM:", "", hwm)), " +")[[1]][1]) / 1024
g <- gc()
gc_max <- sum(g[, ncol(g)])  # "max used" (Mb) of R's heap: Ncells + Vcells
num <- function(x) paste(sprintf("%.10g", x), collapse = ", ")
fe <- fixef(m)
out(sprintf(paste0('@result {"version": "%s", "R": "%s", "times": [%s], "objective": %.10f, ',
                   '"fixef": {%s}, "theta": [%s], "n_evals": %s, "self_peak_mb": %.1f, "gc_max_mb": %.1f}'),
            packageVersion("lme4"), getRversion(), num(times), -2 * as.numeric(logLik(m)),
            paste(sprintf('"%s": %.10g', names(fe), fe), collapse = ", "), num(getME(m, "theta")),
            if (is.null(m@optinfo$feval)) "null" else m@optinfo$feval, peak, gc_max))
