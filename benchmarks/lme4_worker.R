# Fit one benchmark model with lme4 by ML; print timings as JSON (first fit is a warm-up).
# usage: Rscript benchmarks/lme4_worker.R CSV "LABEL,COLUMNS" "FORMULA" REPEATS
suppressMessages(library(lme4))
args <- commandArgs(TRUE)
labels <- strsplit(args[2], ",")[[1]]
d <- read.csv(args[1])
for (l in labels) if (l %in% names(d)) d[[l]] <- factor(d[[l]])
form <- as.formula(args[3])
reps <- as.integer(args[4])
m <- lmer(form, d, REML = FALSE)
times <- numeric(reps)
for (i in seq_len(reps)) times[i] <- system.time(m <- lmer(form, d, REML = FALSE))[["elapsed"]]
hwm <- grep("^VmHWM:", readLines("/proc/self/status"), value = TRUE)
peak <- as.numeric(strsplit(trimws(sub("VmHWM:", "", hwm)), " +")[[1]][1]) / 1024
cat(sprintf('{"engine": "lme4", "times": [%s], "objective": %.10f, "peak_mb": %.1f, "version": "%s"}\n',
            paste(sprintf("%.6f", times), collapse = ", "), deviance(m), peak, packageVersion("lme4")))
