# Profile confidence intervals of a GLMM from lme4, for tests/test_inference.py.
# usage (from the repository root):
#   Rscript tests/reference/make_confint_reference.R > tests/reference/lme4_confint.json
suppressMessages(library(lme4))
num <- function(x) paste(sprintf("%.12g", x), collapse = ", ")
g <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
ci <- suppressMessages(confint(g, method = "profile", oldNames = FALSE))
entry <- function(id, formula, ci) {
  sprintf('  "%s": {\n    "formula": "%s",\n    "names": [%s],\n    "lower": [%s],\n    "upper": [%s]\n  }',
          id, formula, paste0('"', rownames(ci), '"', collapse = ", "), num(ci[, 1]), num(ci[, 2]))
}
# one free parameter besides the profiled one (sigma, or the intercept): a random intercept only
d <- read.csv("tests/data/profile_one_free.csv", colClasses = c(g = "character"))
m <- lmer(yl ~ 1 + (1 | g), d)
ci1 <- suppressMessages(confint(m, method = "profile", oldNames = FALSE))
cat(sprintf('{\n  "lme4": "%s",\n%s,\n%s\n}\n', packageVersion("lme4"),
            entry("confint_cbpp_profile", "cbind(incidence, size - incidence) ~ period + (1 | herd)", ci),
            entry("confint_one_free_profile", "yl ~ 1 + (1 | g)", ci1)))
