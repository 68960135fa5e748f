# Fit each model of blme_priors_spec.json with blme (and lme4 for contrast) and write
# tests/reference/blme_priors.json.
#
# usage (from the repository root):
#   Rscript tests/reference/make_blme_reference.R tests/reference/blme_priors_spec.json \
#           tests/reference/blme_priors.json
# Data are looked up as DATA.csv in tests/data, then hmix/datasets/data.
#
# A spec entry: id, data, factors, r_formula, REML (blmer/lmer), engine ("blmer", "bglmer", "lmer",
# "glmer"), family (bglmer/glmer), and the priors as R source text, exactly as one would type them
# as arguments: cov_prior (absent = blme's default, wishart; "NULL" = flat), fixef_prior, resid_prior.
#
# What blme minimizes (blme 1.0-5; read from its source):
#   LMM: devfun(par) = lme4's objective at (theta, sigma) + prior penalty, where lme4's objective is
#        the REML criterion (REML = TRUE) or the deviance (REML = FALSE) with the constant
#        log(2 pi) terms, evaluated at blme's sigma (profiled with the prior included, in closed form
#        when possible), and the penalty is -2 log p(prior) = exponential terms + polynomial terms +
#        normalizing constant (0 for improper priors) + df * log(sigma^2).
#        par is theta (lme4's order), followed by beta and/or sigma only when those cannot be profiled.
#   GLMM: devfun(theta, beta) = lme4's Laplace deviance + the same kind of penalty.
#   After the fit blme stores in devcomp$cmp: REML (or dev) = the UNPENALIZED criterion at blme's
#   estimates (theta, beta, blme's sigma), and penalty = devfun(par) - that value ("Prior dev" in
#   summary). REMLcrit(m), deviance(m), logLik(m), AIC(m) all use the unpenalized value.
#
# Polishing: raw = blme's defaults. Then the penalized objective blme builds
# (blmer/bglmer(..., devFunOnly = TRUE); for bglmer the stage-2 function of c(theta, beta)) is
# minimized again from the raw optimum: minqa::bobyqa (rhoend 1e-12), nlminb (rel.tol 1e-15,
# finite-difference gradient), Nelder-Mead (reltol 1e-15) and an nlminb run from lme4's default
# start, each kept only if it lowers the objective, then Newton steps on the coordinates off their
# bound (numDeriv Richardson gradient and Hessian). The model is then rebuilt at the polished point
# by refitting with an "optimizer" that returns that point (restart_edge and the boundary check
# off), so every reported figure is blme's own at the polished optimum.
suppressMessages({library(blme); library(jsonlite); library(numDeriv); library(minqa)})
args <- commandArgs(TRUE)
if (length(args) < 2) stop("usage: Rscript make_blme_reference.R SPEC.json OUT.json")
spec <- fromJSON(args[1], simplifyVector = FALSE)
datadirs <- c("tests/data", "hmix/datasets/data")
cap <- function(x, n = 200) if (length(x) > n) x[seq_len(n)] else x
arr <- function(x) I(as.character(unlist(x)))
num <- function(x) I(unname(as.numeric(x)))
find_data <- function(name) {
  for (d in datadirs) { p <- file.path(d, paste0(name, ".csv")); if (file.exists(p)) return(p) }
  stop("no data ", name)
}
capture <- function(expr) {
  msgs <- character(); warns <- character()
  value <- withCallingHandlers(
    tryCatch(expr, error = function(e) e),
    message = function(c) { msgs <<- c(msgs, sub("\n$", "", conditionMessage(c))); invokeRestart("muffleMessage") },
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") })
  list(value = value, messages = msgs, warnings = warns)
}

# an lme4 "optimizer" that returns a given point
fixed_optimizer <- function(point) {
  force(point)
  function(fn, par, lower, upper, control) {
    if (length(par) != length(point)) stop("fixed_optimizer: length mismatch")
    v <- fn(point)
    list(par = point, fval = v, value = v, conv = 0, convergence = 0, message = "fixed (polished) point", feval = 1)
  }
}

# minimize fn from par (lower bounds lower) with several methods; keep the best
polish <- function(fn, par, lower, start_default) {
  f0 <- fn(par); best <- list(par = par, f = f0, how = "raw")
  try_point <- function(p, how) {
    if (any(!is.finite(p)) || any(p < lower)) return()
    f <- fn(p)
    if (is.finite(f) && f < best$f) best <<- list(par = p, f = f, how = how)
  }
  b <- tryCatch(bobyqa(par, fn, lower = lower, control = list(rhobeg = 1e-3, rhoend = 1e-12, maxfun = 1e5)),
                error = function(e) NULL)
  if (!is.null(b)) try_point(b$par, "bobyqa from raw")
  nl <- tryCatch(nlminb(best$par, fn, lower = lower, control = list(rel.tol = 1e-15, x.tol = 1e-15,
                 eval.max = 1e5, iter.max = 1e5)), error = function(e) NULL)
  if (!is.null(nl)) try_point(nl$par, paste(best$how, "+ nlminb"))
  if (length(par) > 1) {
    nm <- tryCatch(optim(best$par, fn, method = "Nelder-Mead", control = list(reltol = 1e-15, maxit = 1e5)),
                   error = function(e) NULL)
    if (!is.null(nm)) try_point(nm$par, paste(best$how, "+ Nelder-Mead"))
  }
  b2 <- tryCatch(nlminb(start_default, fn, lower = lower, control = list(rel.tol = 1e-15, x.tol = 1e-15,
                 eval.max = 1e5, iter.max = 1e5)), error = function(e) NULL)
  from_default <- if (is.null(b2)) NULL else list(par = num(b2$par), f = b2$objective)
  if (!is.null(b2)) try_point(b2$par, "nlminb from the default start")
  # Newton steps on the coordinates away from their bound
  free <- which(best$par > lower + 1e-6)
  steps <- 0L
  for (it in 1:10) {
    if (!length(free)) break
    fr <- function(q) { p <- best$par; p[free] <- q; fn(p) }
    g <- numDeriv::grad(fr, best$par[free])
    if (max(abs(g)) < 1e-9) break
    H <- numDeriv::hessian(fr, best$par[free])
    ev <- eigen(H, symmetric = TRUE, only.values = TRUE)$values
    if (min(ev) <= 0) break
    p <- best$par; p[free] <- p[free] - solve(H, g)
    fbefore <- best$f
    try_point(p, paste(best$how, "+ Newton"))
    if (best$f >= fbefore) break
    steps <- steps + 1L
  }
  at_bound <- which(best$par <= lower + 1e-6)
  grad_free <- if (length(free)) {
    fr <- function(q) { p <- best$par; p[free] <- q; fn(p) }
    numDeriv::grad(fr, best$par[free])
  } else numeric()
  list(par = best$par, f = best$f, how = best$how, raw_f = f0, newton_steps = steps,
       max_abs_grad_free = if (length(grad_free)) max(abs(grad_free)) else 0,
       at_bound = as.integer(at_bound), from_default_start = from_default)
}

# unpenalized lme4 criteria at given estimates
lmm_crit_at <- function(dfl, theta, beta, sigma, reml) {
  e <- environment(dfl)
  prof <- dfl(theta)
  pp <- e$pp; resp <- e$resp
  n <- nrow(pp$X); p <- ncol(pp$X)
  pwrss <- resp$wrss() + pp$sqrL(1)
  bhat <- pp$beta(1)
  RX <- pp$RX()
  r2 <- pwrss + sum((RX %*% (beta - bhat))^2)
  if (reml) {
    at <- pp$ldL2() + pp$ldRX2() + (n - p) * log(2 * pi * sigma^2) + pwrss / sigma^2
  } else {
    at <- pp$ldL2() + n * log(2 * pi * sigma^2) + r2 / sigma^2
  }
  list(profiled = prof, at_estimates = at)
}

figs <- function(m, engine) {
  fe <- fixef(m); V <- as.matrix(vcov(m)); ll <- logLik(m)
  vc <- as.data.frame(VarCorr(m))
  res <- list(
    theta = num(getME(m, "theta")), theta_names = arr(names(getME(m, "theta"))),
    beta = num(fe), beta_names = arr(names(fe)), beta_se = num(sqrt(diag(V))), vcov_beta = unname(V),
    sigma = sigma(m), logLik = as.numeric(ll), df = attr(ll, "df"), AIC = AIC(m), BIC = BIC(m),
    nobs = nobs(m), singular = isSingular(m),
    reported_criterion = if (isLMM(m) && isREML(m)) unname(REMLcrit(m)) else if (isLMM(m)) deviance(m) else -2 * as.numeric(ll),
    reported_criterion_is = if (isLMM(m) && isREML(m)) "REMLcrit(m)" else if (isLMM(m)) "deviance(m)" else "-2 logLik(m)",
    deviance = if (isLMM(m) && isREML(m)) NULL else deviance(m),
    devcomp_cmp = as.list(m@devcomp$cmp[is.finite(m@devcomp$cmp)]),
    varcorr = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = vc$var1[i],
      var2 = vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])),
    optimizer_gradient = num(m@optinfo$derivs$gradient),
    conv_messages = arr(m@optinfo$conv$lme4$messages))
  if (is(m, "bmerMod")) {
    res$penalty <- unname(m@devcomp$cmp[["penalty"]])
    res$penalized_objective <- res$reported_criterion + res$penalty
    if (!isLMM(m)) res$penalized_objective <- unname(m@devcomp$cmp[["dev"]]) + res$penalty
    res$prior_summary <- arr(capture.output(blme:::printPriors(m@priors, ngrps(m), 4)))
  }
  res
}

out <- list(`_info` = list(
  versions = list(R = R.version.string, blme = as.character(packageVersion("blme")),
                  lme4 = as.character(packageVersion("lme4")), minqa = as.character(packageVersion("minqa"))),
  spec = basename(args[1]), generated = format(Sys.time(), "%Y-%m-%d"),
  notes = c("Top-level figures: blme at the polished optimum; raw = blme's defaults.",
            "penalized_objective = what blme minimizes = reported_criterion + penalty (penalty = 'Prior dev' of summary).",
            "reported_criterion: REMLcrit(m) (REML) or deviance(m) (ML) for blmer: lme4's criterion at blme's theta, beta and sigma, without the prior; for bglmer devcomp$cmp['dev'] is the unpenalized Laplace deviance.",
            "unpenalized.lme4_profiled: lme4's own devfun (lmer/glmer devFunOnly) at blme's theta (LMM: beta and sigma profiled by lme4; GLMM: at blme's c(theta, beta)). unpenalized.at_estimates (LMM): lme4's criterion at blme's (theta, beta, sigma) computed from lme4's decomposition.")))

for (s in spec) {
  df <- read.csv(find_data(s$data), na.strings = c("NA", ""))
  for (f in unlist(s$factors)) df[[f]] <- factor(df[[f]])
  reml <- isTRUE(s$REML); engine <- s$engine
  form <- as.formula(s$r_formula)
  famexpr <- if (!is.null(s$family)) as.name(s$family) else NULL
  base <- list(id = s$id, engine = engine, data = s$data, factors = arr(s$factors), r_formula = s$r_formula,
               REML = if (engine %in% c("blmer", "lmer")) reml else NULL, family = s$family,
               cov_prior = if (engine %in% c("blmer", "bglmer")) (if (is.null(s$cov_prior)) "wishart (default)" else s$cov_prior) else NULL,
               fixef_prior = s$fixef_prior, resid_prior = s$resid_prior)
  mkcall <- function(control, devFunOnly = FALSE) {
    a <- list(formula = form, data = quote(df))
    if (engine %in% c("blmer", "lmer")) a$REML <- reml else a$family <- famexpr
    if (engine %in% c("blmer", "bglmer")) {
      if (!is.null(s$cov_prior)) a["cov.prior"] <- list(parse(text = s$cov_prior)[[1]])
      if (!is.null(s$fixef_prior)) a["fixef.prior"] <- list(parse(text = s$fixef_prior)[[1]])
      if (!is.null(s$resid_prior)) a["resid.prior"] <- list(parse(text = s$resid_prior)[[1]])
    }
    if (!is.null(control)) a$control <- control
    if (devFunOnly) a$devFunOnly <- TRUE
    as.call(c(list(as.name(engine)), a))
  }
  t0 <- proc.time()[["elapsed"]]
  raw <- capture(eval(mkcall(NULL)))
  if (inherits(raw$value, "error")) stop(s$id, ": ", conditionMessage(raw$value))
  m0 <- raw$value
  res <- base
  if (engine %in% c("lmer", "glmer")) {
    res <- c(res, figs(m0, engine))
    res$messages <- arr(raw$messages); res$warnings <- arr(raw$warnings)
  } else {
    lmm <- engine == "blmer"
    # bglmer: blme's stage-2 function restarts PIRLS from a stale linear predictor and stops at
    # lme4's tolPwrss = 1e-7, which leaves its Laplace deviance off by ~6e-4 on cbpp; the polished
    # fit uses tolPwrss = 1e-12 (then it agrees with lme4's glmer devfun and glmmTMB)
    tight <- if (lmm) NULL else glmerControl(tolPwrss = 1e-12)
    dfun <- eval(mkcall(tight, devFunOnly = TRUE))
    e <- environment(dfun)
    if (lmm) {
      lower <- blme:::getLowerBounds(e$parInfo)
      rawpar <- if (!is.null(m0@optinfo$val_full)) m0@optinfo$val_full else m0@optinfo$val
      start_default <- unlist(lapply(e$parInfo, function(pi) pi$default(e)))
    } else {
      lower <- c(getME(m0, "lower"), rep(-Inf, length(fixef(m0))))
      rawpar <- c(getME(m0, "theta"), fixef(m0))
      start_default <- c(e$pp$theta, fixef(m0))
    }
    pol <- polish(dfun, unname(rawpar), lower, unname(start_default))
    # blmer compares control$optimizer with "none", so the optimizer goes in by name (lme4 finds it
    # with get(), which reaches the global environment)
    assign("polished_point_optimizer", fixed_optimizer(pol$par), envir = globalenv())
    ctrl <- if (lmm) lmerControl(optimizer = "polished_point_optimizer", restart_edge = FALSE, boundary.tol = 0,
                                 check.conv.grad = "ignore")
            else glmerControl(optimizer = c("bobyqa", "polished_point_optimizer"), restart_edge = FALSE,
                              boundary.tol = 0, check.conv.grad = "ignore", tolPwrss = 1e-12)
    fp <- capture(eval(mkcall(ctrl)))
    if (inherits(fp$value, "error")) stop(s$id, " (polished refit): ", conditionMessage(fp$value))
    m <- fp$value
    res <- c(res, figs(m, engine))
    res$par <- num(pol$par); res$par_layout <- arr(if (lmm) rep(names(e$parInfo), sapply(e$parInfo, `[[`, "length")) else
                                                     c(rep("theta", length(getME(m, "theta"))), rep("beta", length(fixef(m)))))
    res$devfun_at_par <- dfun(pol$par)
    if (!lmm) {
      res$tolPwrss <- 1e-12
      dflt <- eval(mkcall(NULL, devFunOnly = TRUE))
      res$devfun_default_tol_at_par <- dflt(pol$par)
    }
    if (lmm) {
      res$sigma_optimization <- e$blmerControl$sigmaOptimizationType
      res$fixef_optimization <- e$blmerControl$fixefOptimizationType
      res$prior_df_adjustment <- e$blmerControl$df
      res$prior_constant <- e$blmerControl$constant
      dfl <- eval(as.call(list(as.name("lmer"), formula = form, data = quote(df), REML = reml, devFunOnly = TRUE)))
      u <- lmm_crit_at(dfl, getME(m, "theta"), fixef(m), sigma(m), reml)
      res$unpenalized <- list(lme4_profiled = u$profiled, at_estimates = u$at_estimates)
    } else {
      dfg <- eval(as.call(list(as.name("glmer"), formula = form, data = quote(df), family = famexpr, devFunOnly = TRUE,
                               control = glmerControl(tolPwrss = 1e-12))))
      res$unpenalized <- list(lme4_profiled = dfg(c(getME(m, "theta"), fixef(m))), at_estimates = NULL)
    }
    res$polish <- list(method = pol$how, newton_steps = pol$newton_steps,
                       raw_objective = pol$raw_f, polished_objective = pol$f,
                       objective_decrease = pol$raw_f - pol$f,
                       max_abs_grad_free = pol$max_abs_grad_free, at_lower_bound = I(pol$at_bound),
                       from_default_start = pol$from_default_start)
    r <- figs(m0, engine)
    res$raw <- list(par = num(rawpar), theta = r$theta, beta = r$beta, beta_se = r$beta_se, sigma = r$sigma,
                    reported_criterion = r$reported_criterion, penalty = r$penalty,
                    penalized_objective = r$penalized_objective, optimizer_gradient = r$optimizer_gradient,
                    conv_messages = r$conv_messages, optimizer = m0@optinfo$optimizer, message = m0@optinfo$message)
    res$moved <- list(max_abs_theta = max(abs(r$theta - res$theta)), max_abs_beta = max(abs(r$beta - res$beta)),
                      max_rel_se = max(abs(r$beta_se / res$beta_se - 1)), sigma = r$sigma - res$sigma,
                      penalized_objective = r$penalized_objective - res$penalized_objective)
    res$messages <- arr(raw$messages); res$warnings <- arr(raw$warnings)
    res$polished_refit_warnings <- arr(fp$warnings)
  }
  res$seconds <- proc.time()[["elapsed"]] - t0
  out[[s$id]] <- res
  cat(sprintf("%-24s crit=%.8f pen=%s obj=%s sigma=%.6g theta=%s\n", s$id, res$reported_criterion,
              if (is.null(res$penalty)) "-" else sprintf("%.6f", res$penalty),
              if (is.null(res$penalized_objective)) "-" else sprintf("%.8f", res$penalized_objective),
              res$sigma, paste(signif(res$theta, 6), collapse = ",")))
  if (!is.null(res$polish)) cat(sprintf("    polish: %s; obj decrease %.3g; max|grad| %.2g; moved theta %.3g beta %.3g\n",
    res$polish$method, res$polish$objective_decrease, res$polish$max_abs_grad_free, res$moved$max_abs_theta, res$moved$max_abs_beta))
}
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE), args[2])
