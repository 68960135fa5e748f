# Fit one benchmark model with lme4 by ML; print timings as JSON (first fit is a warm-up).
# usage: Rscript benchmarks/lme4_worker.R CSV "LABEL,COLUMNS" "FORMULA" REPEATS [FAMILY]
suppressMessages(library(lme4))
args <- commandArgs(TRUE)
labels <- strsplit(args[2], ",")[[1]]
d <- read.csv(args[1])
for (l in labels) if (l %in% names(d)) d[[l]] <- factor(d[[l]])
form <- as.formula(args[3])
reps <- as.integer(args[4])
fam <- if (length(args) >= 5) args[5] else "gaussian"
fit <- function() if (fam == "gaussian") lmer(form, d, REML = FALSE) else glmer(form, d, family = get(fam)())
m <- fit()
times <- numeric(reps)
for (i in seq_len(reps)) times[i] <- system.time(m <- fit())[["elapsed"]]
hwm <- grep("^VmHWM:", readLines("/proc/self/status"), value = TRUE)
peak <- as.numeric(strsplit(trimws(sub("VmHWM:", "", hwm)), " +")[[1]][1]) / 1024
cat(sprintf('{"engine": "lme4", "times": [%s], "objective": %.10f, "peak_mb": %.1f, "version": "%s"}\n',
            paste(sprintf("%.6f", times), collapse = ", "), -2 * as.numeric(logLik(m)), peak, packageVersion("lme4")))
