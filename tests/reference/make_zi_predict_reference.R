# glmmTMB's predictions with standard errors for a zero-inflated Poisson GLMM (Salamanders),
# population level (re.form = NA), for tests/test_zi_predict.py.
# Rscript tests/reference/make_zi_predict_reference.R > tests/reference/zi_predict.json
suppressMessages(library(glmmTMB))
data(Salamanders)
m <- glmmTMB(count ~ mined + (1 | site), zi = ~ mined, family = poisson, data = Salamanders)
new <- data.frame(mined = factor(c("no", "yes"), levels = levels(Salamanders$mined)), site = NA)
out <- list()
for (ty in c("response", "zprob", "conditional", "link")) {
  p <- predict(m, newdata = new, type = ty, se.fit = TRUE, re.form = NA)
  out[[ty]] <- list(fit = unname(p$fit), se = unname(p$se.fit))
}
out$glmmTMB <- as.character(packageVersion("glmmTMB"))
cat(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "\n")
