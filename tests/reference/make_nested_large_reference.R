# lme4 on a large three-level nested design (tests/data/nested_large.csv.gz, written by
# make_glmmtmb_blme_data.R): 21,000 schools x 2 classes x 3 students = 126,000 rows;
# y ~ x + (1 | school) + (1 | school:class), so school:class has 42,000 levels and school 21,000.
#
# usage (from the repository root):
#   Rscript tests/reference/make_nested_large_reference.R tests/reference/lme4_nested_large.json
#
# Each model is fitted with lme4's defaults (REML and ML) and polished: lme4's devfun
# (lmer(..., devFunOnly = TRUE)) is minimized again from lme4's optimum with minqa::bobyqa
# (rhoend 1e-12) and the model is rebuilt at that point (lme4 optimizer returning it); both sets of
# figures are recorded. Times are elapsed seconds of the default fit on the machine that made the
# file (2 cores), for orientation only.
suppressMessages({library(lme4); library(jsonlite); library(minqa); library(numDeriv)})
args <- commandArgs(TRUE)
outfile <- if (length(args)) args[1] else "tests/reference/lme4_nested_large.json"
num <- function(x) I(unname(as.numeric(x)))
arr <- function(x) I(as.character(unlist(x)))
df <- read.csv(gzfile("tests/data/nested_large.csv.gz"))
df$school <- factor(df$school); df$class <- factor(df$class)
form <- y ~ x + (1 | school) + (1 | school:class)

polished_point_optimizer <- NULL
figs <- function(m) {
  fe <- fixef(m); V <- as.matrix(vcov(m)); vc <- as.data.frame(VarCorr(m)); ll <- logLik(m)
  list(objective = if (isREML(m)) unname(REMLcrit(m)) else deviance(m),
       logLik = as.numeric(ll), df = attr(ll, "df"), AIC = AIC(m), BIC = BIC(m), nobs = nobs(m),
       ngroups = as.list(ngrps(m)),
       theta = num(getME(m, "theta")), theta_names = arr(names(getME(m, "theta"))),
       beta = num(fe), beta_names = arr(names(fe)), beta_se = num(sqrt(diag(V))), vcov_beta = unname(V),
       sigma = sigma(m), singular = isSingular(m),
       varcorr = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = vc$var1[i],
         var2 = vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])),
       fitted_first10 = num(head(fitted(m), 10)),
       ranef_school_first10 = num(head(ranef(m)[["school"]][[1]], 10)),
       ranef_school_levels_first10 = arr(head(rownames(ranef(m)[["school"]]), 10)),
       ranef_schoolclass_first10 = num(head(ranef(m)[["school:class"]][[1]], 10)),
       ranef_schoolclass_levels_first10 = arr(head(rownames(ranef(m)[["school:class"]]), 10)),
       optimizer = m@optinfo$optimizer, optimizer_gradient = num(m@optinfo$derivs$gradient),
       conv_messages = arr(m@optinfo$conv$lme4$messages))
}

out <- list(`_info` = list(
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4"))),
  data = "nested_large.csv.gz", n_rows = nrow(df),
  notes = c("objective: REML criterion (REML = TRUE) or deviance (REML = FALSE), lme4's scale.",
            "Top-level figures are polished (bobyqa, rhoend 1e-12, from lme4's optimum); raw = lme4's defaults.",
            "school and class are read as factors; school:class is their interaction (42,000 levels).")))
for (reml in c(TRUE, FALSE)) {
  id <- if (reml) "nested_large_reml" else "nested_large_ml"
  t0 <- proc.time()[["elapsed"]]
  m0 <- lmer(form, data = df, REML = reml)
  secs <- proc.time()[["elapsed"]] - t0
  dfun <- lmer(form, data = df, REML = reml, devFunOnly = TRUE)
  th0 <- getME(m0, "theta")
  b <- bobyqa(th0, dfun, lower = getME(m0, "lower"), control = list(rhobeg = 1e-4, rhoend = 1e-12, maxfun = 1e4))
  th <- if (b$fval < dfun(th0)) b$par else th0
  g <- numDeriv::grad(dfun, th)
  polished_point_optimizer <<- function(fn, par, lower, upper, control) {
    v <- fn(th); list(par = th, fval = v, value = v, conv = 0, message = "fixed (polished) point")
  }
  assign("polished_point_optimizer", polished_point_optimizer, envir = globalenv())
  m <- lmer(form, data = df, REML = reml,
            control = lmerControl(optimizer = "polished_point_optimizer", restart_edge = FALSE, boundary.tol = 0,
                                  calc.derivs = FALSE))
  r0 <- figs(m0)
  res <- c(list(id = id, data = "nested_large", factors = arr(c("school", "class")),
                r_formula = "y ~ x + (1 | school) + (1 | school:class)", REML = reml, family = "gaussian"),
           figs(m))
  res$lme4_seconds <- secs
  res$polish <- list(raw_objective = r0$objective, polished_objective = res$objective,
                     objective_decrease = r0$objective - res$objective,
                     max_abs_theta_change = max(abs(r0$theta - res$theta)),
                     max_abs_grad = max(abs(g)), bobyqa_evals = b$feval)
  res$raw <- r0[c("objective", "theta", "beta", "beta_se", "sigma", "optimizer_gradient", "conv_messages")]
  out[[id]] <- res
  cat(sprintf("%-18s %.1fs obj=%.8f theta=%s sigma=%.8g; polish decrease %.3g, |grad| %.2g\n", id, secs, res$objective,
              paste(signif(res$theta, 8), collapse = ","), res$sigma, res$polish$objective_decrease, res$polish$max_abs_grad))
}
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE), outfile)
