# Fit one benchmark model with glmmTMB by ML; same protocol as worker.py (first fit is a warm-up).
# usage: Rscript benchmarks/glmmtmb_worker.R CSV "LABEL,COLUMNS" "FORMULA" REPEATS [FAMILY [ZIFORMULA]]
# Only the glmmTMB() call is timed (system.time), so R's start-up and read.csv are not. glmmTMB's
# defaults: nlminb, one thread (glmmTMBControl(parallel) is unset).
out <- function(...) { cat(..., "\n", sep = ""); flush(stdout()) }
if (!suppressWarnings(suppressMessages(requireNamespace("glmmTMB", quietly = TRUE)))) quit(status = 3)
suppressMessages(library(glmmTMB))
args <- commandArgs(TRUE)
labels <- strsplit(args[2], ",")[[1]]
header <- names(read.csv(args[1], nrows = 1))
classes <- setNames(rep("character", length(labels)), labels)[labels %in% header]
d <- read.csv(args[1], colClasses = classes)
# labels that are all integers become factors in numeric order (hmix sorts such labels as numbers)
for (l in names(classes)) {
  v <- d[[l]]
  d[[l]] <- if (all(grepl("^[0-9]+$", v))) factor(v, levels = as.character(sort(unique(as.integer(v))))) else factor(v)
}
form <- as.formula(args[3])
reps <- as.integer(args[4])
fam <- if (length(args) >= 5) args[5] else "gaussian"
family <- if (fam == "negative_binomial") nbinom2() else get(fam)()
zi <- if (length(args) >= 6 && nzchar(args[6])) as.formula(args[6]) else ~0
fit <- function() glmmTMB(form, d, family = family, ziformula = zi, REML = FALSE)
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
num <- function(x) paste(sprintf("%.10g", x), collapse = ", ")
fe <- fixef(m)$cond
out(sprintf(paste0('@result {"version": "%s", "R": "%s", "times": [%s], "objective": %.10f, ',
                   '"fixef": {%s}, "theta": [%s], "n_evals": %s, "self_peak_mb": %.1f}'),
            packageVersion("glmmTMB"), getRversion(), num(times), -2 * as.numeric(logLik(m)),
            paste(sprintf('"%s": %.10g', names(fe), fe), collapse = ", "),
            num(m$fit$par[names(m$fit$par) == "theta"]), m$fit$evaluations[["function"]], peak))
