# Profile confidence intervals of a GLMM from lme4, for tests/test_inference.py.
# usage: Rscript tests/reference/make_confint_reference.R > tests/reference/lme4_confint.json
suppressMessages(library(lme4))
num <- function(x) paste(sprintf("%.12g", x), collapse = ", ")
g <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
ci <- suppressMessages(confint(g, method = "profile", oldNames = FALSE))
cat(sprintf(paste0('{\n  "lme4": "%s",\n  "confint_cbpp_profile": {\n',
                   '    "formula": "cbind(incidence, size - incidence) ~ period + (1 | herd)",\n',
                   '    "names": [%s],\n    "lower": [%s],\n    "upper": [%s]\n  }\n}\n'),
            packageVersion("lme4"), paste0('"', rownames(ci), '"', collapse = ", "),
            num(ci[, 1]), num(ci[, 2])))
