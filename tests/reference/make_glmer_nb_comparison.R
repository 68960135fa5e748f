# lme4's glmer.nb against glmmTMB's nbinom2 on grouseticks: why their negative binomial GLMMs
# differ (docs/pages/counts.md, tests/test_glmer_nb.py).
#
# usage (from the repository root):
#   Rscript tests/reference/make_glmer_nb_comparison.R tests/reference/glmer_nb_comparison.json
#
# Model: TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | LOCATION), tests/data/grouseticks.csv
# (INDEX, BROOD, LOCATION, YEAR as factors). Both packages use the Laplace approximation; lme4
# puts the PIRLS (Fisher, expected-information) weights into its log-determinant, glmmTMB the
# observed information. The script evaluates each package's objective at the other's estimates:
#   lme4_at_*     lme4's stage-2 deviance function (glmer(..., devFunOnly = TRUE) with
#                 negative.binomial(theta)) at (random-effect SDs, beta), PIRLS tolerance
#                 tolPwrss = 1e-13 (at lme4's default 1e-7 the value depends on PIRLS's start by
#                 up to 3e-3 here)
#   glmmtmb_at_*  2 * obj$fn(beta, log theta, log SDs) of the glmmTMB fit
# Fits: glmer.nb and glmmTMB at their defaults; glmmTMB again with theta fixed at its estimate
# (map = list(betad = NA)), whose SEs do not carry theta's uncertainty, as lme4's do not.
suppressMessages({library(lme4); library(glmmTMB); library(jsonlite)})
args <- commandArgs(TRUE)
if (length(args) < 1) stop("usage: Rscript make_glmer_nb_comparison.R OUT.json")

df <- read.csv("tests/data/grouseticks.csv")
for (f in c("INDEX", "BROOD", "LOCATION", "YEAR")) df[[f]] <- factor(df[[f]])
form <- TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | LOCATION)
num <- function(x) I(unname(as.numeric(x)))
timed <- function(expr) {
  t0 <- proc.time()[["elapsed"]]
  value <- expr
  list(value = value, seconds = proc.time()[["elapsed"]] - t0)
}

# ---- the fits ----------------------------------------------------------------------------------
nb <- timed(glmer.nb(form, data = df))
m <- nb$value
lme4_fit <- list(
  minus2logLik = -2 * as.numeric(logLik(m)), theta = getME(m, "glmer.nb.theta"),
  beta = num(fixef(m)), beta_names = I(names(fixef(m))), beta_se = num(sqrt(diag(as.matrix(vcov(m))))),
  re_sd = num(getME(m, "theta")), re_names = I(names(getME(m, "theta"))),
  theta_evaluations = attr(m, "nevals"), seconds = nb$seconds)

tmb <- timed(glmmTMB(form, data = df, family = nbinom2))
t <- tmb$value
re_sd_tmb <- unlist(lapply(VarCorr(t)$cond, function(v) attr(v, "stddev")))
tmb_fit <- list(
  minus2logLik = -2 * as.numeric(logLik(t)), theta = sigma(t),
  beta = num(fixef(t)$cond), beta_se = num(sqrt(diag(vcov(t)$cond))), re_sd = num(re_sd_tmb),
  maxgrad = max(abs(t$obj$gr(t$fit$par))), seconds = tmb$seconds)

t_fixed <- glmmTMB(form, data = df, family = nbinom2,
                   map = list(betad = factor(NA)), start = list(betad = log(sigma(t))))
tmb_fixed <- list(minus2logLik = -2 * as.numeric(logLik(t_fixed)),
                  beta_se = num(sqrt(diag(vcov(t_fixed)$cond))))

# ---- each objective at each package's estimates ------------------------------------------------
lme4_at <- function(theta, sd, beta) {
  f <- glmer(form, data = df, family = MASS::negative.binomial(theta = theta), devFunOnly = TRUE,
             control = glmerControl(tolPwrss = 1e-13))
  f(c(sd, beta))
}
tmb_at <- function(theta, sd, beta) 2 * t$obj$fn(c(beta, log(theta), log(sd)))
at <- list(
  lme4_estimates = list(
    lme4 = lme4_at(lme4_fit$theta, lme4_fit$re_sd, lme4_fit$beta),
    glmmTMB = tmb_at(lme4_fit$theta, lme4_fit$re_sd, lme4_fit$beta)),
  glmmTMB_estimates = list(
    lme4 = lme4_at(tmb_fit$theta, tmb_fit$re_sd, tmb_fit$beta),
    glmmTMB = tmb_at(tmb_fit$theta, tmb_fit$re_sd, tmb_fit$beta)))

out <- list(
  `_info` = list(
    versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                    glmmTMB = as.character(packageVersion("glmmTMB")),
                    TMB = as.character(packageVersion("TMB")), MASS = as.character(packageVersion("MASS"))),
    model = deparse(form), data = "grouseticks", factors = I(c("INDEX", "BROOD", "LOCATION", "YEAR")),
    generated = format(Sys.time(), "%Y-%m-%d"),
    notes = c("re_sd are the random-effect SDs (lme4's theta for scalar terms), BROOD then LOCATION in both.",
              "objective_at: -2 log L by each package's Laplace approximation at each package's estimates; lme4's with tolPwrss = 1e-13.",
              "glmmTMB_theta_fixed: theta fixed at glmmTMB's estimate, for SEs that do not carry its uncertainty.")),
  glmer_nb = lme4_fit, glmmTMB = tmb_fit, glmmTMB_theta_fixed = tmb_fixed, objective_at = at)
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), args[1])
cat(sprintf("glmer.nb -2ll %.6f theta %.5f (%.1fs) | glmmTMB -2ll %.6f theta %.5f (%.1fs)\n",
            lme4_fit$minus2logLik, lme4_fit$theta, nb$seconds, tmb_fit$minus2logLik, tmb_fit$theta, tmb$seconds))
cat(sprintf("at lme4's estimates: lme4 %.6f glmmTMB %.6f | at glmmTMB's: lme4 %.6f glmmTMB %.6f\n",
            at$lme4_estimates$lme4, at$lme4_estimates$glmmTMB, at$glmmTMB_estimates$lme4, at$glmmTMB_estimates$glmmTMB))
