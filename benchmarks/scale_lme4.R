# One lme4 fit of a scale benchmark: Rscript benchmarks/scale_lme4.R CSV FORMULA
# The CSV (written by scale.py from scale_data.py) is read before the clock starts.
suppressMessages(library(lme4))
args <- commandArgs(TRUE)
d <- read.csv(args[1])
d$u <- factor(d$u); d$i <- factor(d$i)
form <- as.formula(args[2])
t <- system.time(m <- lmer(form, d, REML = FALSE))[["elapsed"]]
hwm <- grep("^VmHWM:", readLines("/proc/self/status"), value = TRUE)
peak <- as.numeric(strsplit(trimws(sub("VmHWM:", "", hwm)), " +")[[1]][1]) / 1024
cat(sprintf('@result {"seconds": %.3f, "objective": %.10f, "theta": [%s], "n_evals": %s, "peak_mb": %.1f, "rows": %d}\n',
            t, deviance(m), paste(sprintf("%.10g", getME(m, "theta")), collapse = ", "),
            if (is.null(m@optinfo$feval)) "null" else m@optinfo$feval, peak, nrow(d)))
