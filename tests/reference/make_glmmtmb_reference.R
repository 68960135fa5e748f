# Fit each model of a glmmTMB spec (glmmtmb_families_spec.json, glmmtmb_covstruct_spec.json) and
# write the figures hmix's glmmTMB-style features are tested against.
#
# usage (from the repository root):
#   Rscript tests/reference/make_glmmtmb_reference.R tests/reference/glmmtmb_families_spec.json \
#           tests/reference/glmmtmb_families.json
#   Rscript tests/reference/make_glmmtmb_reference.R tests/reference/glmmtmb_covstruct_spec.json \
#           tests/reference/glmmtmb_covstruct.json
# Data are looked up as DATA.csv or DATA.csv.gz in tests/data, then hmix/datasets/data.
#
# A spec entry: id, data, factors (columns read as factors; levels sorted as strings, exactly as
# factor() on the CSV column gives them), r_formula, and optionally
#   engine      "glmmTMB" (default), "glmer", "glmer.nb" or "lmer" (lme4 fits for comparison)
#   family      glmmTMB family function name: gaussian (default), poisson, nbinom2, Gamma;
#               for engine glmer: "negative.binomial" (MASS) with nb_theta
#   link        link name (default: the family's default)
#   ziformula   zero-inflation formula (string), default ~0
#   REML        true/false (default false)
#   fixed_disp  fix glmmTMB's dispersion parameter betad at this value (map = list(betad = NA))
#   compare_with id of an earlier entry (figures of both are set side by side in `comparison`)
#
# glmmTMB fits are done three ways:
#   raw       glmmTMB's defaults (nlminb, iter.max 300, eval.max 400)
#   polished  the same nlminb run followed by Newton steps on the Laplace objective, from the raw
#             optimum: Hessian = numDeriv::jacobian of obj$gr (symmetrized), step halving, until
#             max|gradient| < 1e-8 or no step improves; glmmTMB then finishes (sdreport, ranef, ...)
#             at the polished point. All top-level figures are those of the polished fit.
#   tight     a refit with optCtrl = list(iter.max = 1e4, eval.max = 1e4, rel.tol = 1e-14)
# and the JSON holds the polished figures at the top level, the raw and tight figures in `raw`
# and `tight`, and their differences from the polished ones in `moved`.
suppressMessages({library(glmmTMB); library(lme4); library(jsonlite); library(numDeriv); library(MASS)})
args <- commandArgs(TRUE)
if (length(args) < 2) stop("usage: Rscript make_glmmtmb_reference.R SPEC.json OUT.json")
spec <- fromJSON(args[1], simplifyVector = FALSE)
datadirs <- c("tests/data", "hmix/datasets/data")
cap <- function(x, n = 200) if (length(x) > n) x[seq_len(n)] else x
arr <- function(x) I(as.character(unlist(x)))
num <- function(x) I(unname(as.numeric(x)))  # always a JSON array

find_data <- function(name) {
  for (d in datadirs) for (ext in c(".csv", ".csv.gz")) {
    p <- file.path(d, paste0(name, ext)); if (file.exists(p)) return(p)
  }
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

# ---- Newton polishing of a TMB objective -------------------------------------------------------
newton_polish <- function(par, fn, gr, tol = 1e-8, maxit = 30) {
  f <- fn(par); g <- as.numeric(gr(par)); steps <- 0L
  g0 <- max(abs(g))
  for (it in seq_len(maxit)) {
    if (max(abs(g)) < tol) break
    H <- numDeriv::jacobian(function(p) as.numeric(gr(p)), par)
    H <- (H + t(H)) / 2
    ev <- eigen(H, symmetric = TRUE, only.values = TRUE)$values
    if (min(ev) <= 0) H <- H + (abs(min(ev)) + 1e-6 * max(abs(ev))) * diag(length(par))
    step <- solve(H, g)
    lam <- 1; ok <- FALSE
    while (lam > 1e-6) {
      p2 <- par - lam * step
      f2 <- fn(p2); g2 <- as.numeric(gr(p2))
      if (is.finite(f2) && all(is.finite(g2)) &&
          (f2 < f || (f2 <= f + 1e-10 * max(1, abs(f)) && max(abs(g2)) < max(abs(g))))) { ok <- TRUE; break }
      lam <- lam / 2
    }
    if (!ok) break
    par <- p2; f <- f2; g <- g2; steps <- steps + 1L
  }
  list(par = par, objective = f, maxgrad = max(abs(g)), maxgrad_start = g0, steps = steps)
}

polish_log <- new.env()
polish_optimizer <- function(start, objective, gradient, control) {
  raw <- nlminb(start, objective, gradient, control = control)
  pol <- newton_polish(raw$par, objective, gradient)
  # make the polished point TMB's "best" point, the one sdreport and ranef use
  e <- environment(objective)
  f <- objective(pol$par)
  if (!is.null(e$last.par)) { e$last.par.best <- e$last.par; e$value.best <- f }
  polish_log$raw <- raw; polish_log$pol <- pol
  list(par = pol$par, objective = f, convergence = raw$convergence,
       message = sprintf("nlminb: %s; then %d Newton steps", raw$message, pol$steps),
       iterations = raw$iterations, evaluations = raw$evaluations)
}

# ---- figures of a glmmTMB fit -----------------------------------------------------------------
vc_figs <- function(vcl, structs) {
  if (!length(vcl)) return(list())
  lapply(seq_along(vcl), function(i) {
    v <- vcl[[i]]
    sd <- attr(v, "stddev"); cr <- attr(v, "correlation")
    list(group = names(vcl)[i], structure = names(structs[[i]]$blockCode),
         names = arr(names(sd)), sd = num(sd),
         corr = if (length(sd) > 1) unname(cr) else NULL,
         rho = if (names(structs[[i]]$blockCode) %in% c("ar1", "cs") && length(sd) > 1) cr[1, 2] else NULL,
         cov = unname(as.matrix(v)))
  })
}
theta_terms <- function(m, par) {
  rs <- m$modelInfo$reStruc
  th <- par[names(par) == "theta"]; thz <- par[names(par) == "thetazi"]
  out <- list(); k <- 0; kz <- 0
  for (part in c("cond", "zi")) {
    for (nm in names(rs[[paste0(part, "ReStruc")]])) {
      s <- rs[[paste0(part, "ReStruc")]][[nm]]
      nt <- s$blockNumTheta
      vals <- if (part == "cond") th[k + seq_len(nt)] else thz[kz + seq_len(nt)]
      if (part == "cond") k <- k + nt else kz <- kz + nt
      out[[length(out) + 1]] <- list(part = part, term = nm, structure = names(s$blockCode),
        block_size = s$blockSize, n_levels = s$blockReps, theta = num(vals))
    }
  }
  out
}
short_figs <- function(m) {
  fe <- fixef(m); V <- vcov(m)
  ll <- logLik(m)
  list(minus2logLik = -2 * as.numeric(ll),
       par = num(m$fit$par), maxgrad = max(abs(m$obj$gr(m$fit$par))),
       convergence = m$fit$convergence, message = m$fit$message,
       beta = num(fe$cond), beta_se = num(sqrt(diag(as.matrix(V$cond)))),
       beta_zi = num(fe$zi), beta_zi_se = if (length(fe$zi)) num(sqrt(diag(as.matrix(V$zi)))) else num(numeric()),
       sigma = sigma(m),
       re_sd = num(unlist(lapply(VarCorr(m)$cond, function(v) attr(v, "stddev")))))
}
tmb_figs <- function(m, df) {
  fe <- fixef(m); V <- vcov(m); Vf <- vcov(m, full = TRUE)
  ll <- logLik(m)
  zi <- length(fe$zi) > 0
  re <- capture(ranef(m, condVar = TRUE))$value
  first <- list()
  if (length(re$cond)) {
    r <- re$cond[[1]]; cv <- attr(r, "condVar")
    condsd <- if (is.null(cv)) NULL else if (is.list(cv)) NULL else
      lapply(seq_len(ncol(r)), function(j) num(cap(sqrt(if (length(dim(cv)) == 3) cv[j, j, ] else cv))))
    first <- list(group = names(re$cond)[1], terms = arr(colnames(r)), levels = arr(cap(rownames(r))),
                  n_levels = nrow(r), modes = lapply(seq_len(ncol(r)), function(j) num(cap(r[[j]]))),
                  condsd = condsd)
  }
  pr <- function(type) num(head(predict(m, type = type), 10))
  list(
    minus2logLik = -2 * as.numeric(ll), logLik = as.numeric(ll),
    AIC = AIC(m), BIC = BIC(m), df = attr(ll, "df"), nobs = nobs(m), df_residual = df.residual(m),
    beta = num(fe$cond), beta_names = arr(names(fe$cond)), beta_se = num(sqrt(diag(as.matrix(V$cond)))),
    vcov_beta = unname(as.matrix(V$cond)),
    beta_zi = num(fe$zi), beta_zi_names = arr(names(fe$zi)),
    beta_zi_se = if (zi) num(sqrt(diag(as.matrix(V$zi)))) else num(numeric()),
    beta_disp = num(fe$disp), beta_disp_names = arr(names(fe$disp)),
    vcov_full = unname(as.matrix(Vf)), vcov_full_names = arr(rownames(Vf)),
    sigma = sigma(m),
    varcorr = vc_figs(VarCorr(m)$cond, m$modelInfo$reStruc$condReStruc),
    varcorr_zi = vc_figs(VarCorr(m)$zi, m$modelInfo$reStruc$ziReStruc),
    theta_terms = theta_terms(m, m$fit$par),
    par = num(m$fit$par), par_names = arr(names(m$fit$par)),
    par_fixed = num(m$sdr$par.fixed), par_fixed_names = arr(names(m$sdr$par.fixed)),
    objective = m$fit$objective,
    convergence = m$fit$convergence, optimizer_message = m$fit$message,
    maxgrad = max(abs(m$obj$gr(m$fit$par))),
    pdHess = m$sdr$pdHess,
    ranef_first = first,
    predict_response = pr("response"), predict_link = pr("link"),
    predict_conditional = if (zi) pr("conditional") else NULL,
    predict_zprob = if (zi) pr("zprob") else NULL,
    fitted_response_sumsq = sum(predict(m, type = "response")^2))
}

# ---- lme4 figures -----------------------------------------------------------------------------
lme4_figs <- function(m) {
  fe <- fixef(m); V <- as.matrix(vcov(m)); ll <- logLik(m)
  vc <- as.data.frame(VarCorr(m))
  rr <- ranef(m, condVar = TRUE); r <- rr[[1]]
  rdf <- as.data.frame(rr); rdf <- rdf[rdf$grpvar == names(rr)[1], ]
  res <- list(
    minus2logLik = -2 * as.numeric(ll), logLik = as.numeric(ll), AIC = AIC(m), BIC = BIC(m),
    df = attr(ll, "df"), nobs = nobs(m),
    objective = if (isLMM(m) && isREML(m)) unname(REMLcrit(m)) else -2 * as.numeric(ll),
    deviance = if (isLMM(m) && isREML(m)) NULL else deviance(m),
    theta = num(getME(m, "theta")), theta_names = arr(names(getME(m, "theta"))),
    beta = num(fe), beta_names = arr(names(fe)), beta_se = num(sqrt(diag(V))), vcov_beta = unname(V),
    sigma = sigma(m), singular = isSingular(m),
    varcorr = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = vc$var1[i],
      var2 = vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])),
    ranef_first = list(group = names(rr)[1], terms = arr(colnames(r)), levels = arr(cap(rownames(r))),
      modes = lapply(seq_len(ncol(r)), function(j) num(cap(r[[j]]))),
      condsd = lapply(colnames(r), function(t) num(cap(rdf$condsd[rdf$term == t])))),
    predict_response = num(head(fitted(m), 10)),
    conv_messages = arr(m@optinfo$conv$lme4$messages),
    optimizer_gradient = num(m@optinfo$derivs$gradient),
    lme4_version = as.character(packageVersion("lme4")))
  if (!is.null(m@call$family) && grepl("Negative Binomial", family(m)$family)) {
    res$nb_theta <- getME(m, "glmer.nb.theta")
  }
  res
}

versions <- list(R = R.version.string, glmmTMB = as.character(packageVersion("glmmTMB")),
                 TMB = as.character(packageVersion("TMB")), lme4 = as.character(packageVersion("lme4")),
                 MASS = as.character(packageVersion("MASS")), numDeriv = as.character(packageVersion("numDeriv")))
out <- list(`_info` = list(versions = versions, spec = basename(args[1]),
  generated = format(Sys.time(), "%Y-%m-%d"),
  notes = c("Top-level figures of glmmTMB entries are the polished fit; raw = glmmTMB defaults; tight = refit with rel.tol 1e-14.",
            "minus2logLik is -2 logLik; for REML = TRUE it is the REML criterion (glmmTMB and lme4 agree on it).",
            "glmmTMB sigma: gaussian residual SD (betad = log(sigma^2)); nbinom2 theta (Var = mu + mu^2/theta, betad = log(theta)); Gamma the coefficient of variation (shape = 1/sigma^2, betad = log(sigma)); poisson 1.",
            "par: glmmTMB's optimizer vector (beta, betazi, betad, theta, thetazi; beta absent for REML, where it is integrated out).")))

for (s in spec) {
  df <- read.csv(find_data(s$data), na.strings = c("NA", ""))
  for (f in unlist(s$factors)) df[[f]] <- factor(df[[f]])
  engine <- if (is.null(s$engine)) "glmmTMB" else s$engine
  famname <- if (is.null(s$family)) "gaussian" else s$family
  reml <- isTRUE(s$REML)
  form <- as.formula(s$r_formula)
  zif <- if (is.null(s$ziformula)) ~0 else as.formula(s$ziformula)
  base <- list(id = s$id, engine = engine, data = s$data, factors = arr(s$factors),
               factor_levels = lapply(setNames(unlist(s$factors), unlist(s$factors)), function(f) arr(levels(df[[f]]))),
               r_formula = s$r_formula, ziformula = s$ziformula, family = famname, REML = reml,
               n_rows = nrow(df))
  t0 <- proc.time()[["elapsed"]]
  if (engine == "glmmTMB") {
    fam <- if (is.null(s$link)) get(famname)() else get(famname)(link = s$link)
    base$link <- fam$link
    extra <- list()
    if (!is.null(s$fixed_disp)) {
      extra$map <- list(betad = factor(NA)); extra$start <- list(betad = s$fixed_disp)
      base$fixed_disp <- s$fixed_disp
    }
    call_with <- function(ctrl) do.call(glmmTMB, c(list(formula = form, ziformula = zif, family = fam,
                                                          data = df, REML = reml, control = ctrl), extra))
    fr <- capture(call_with(glmmTMBControl()))
    fp <- capture(call_with(glmmTMBControl(optimizer = polish_optimizer)))
    ft <- capture(call_with(glmmTMBControl(optCtrl = list(iter.max = 1e4, eval.max = 1e4, rel.tol = 1e-14))))
    for (x in list(fr, fp, ft)) if (inherits(x$value, "error")) stop(s$id, ": ", conditionMessage(x$value))
    mp <- fp$value
    post <- capture(tmb_figs(mp, df))
    if (inherits(post$value, "error")) stop(s$id, ": ", conditionMessage(post$value))
    res <- c(base, post$value)
    res$polish <- list(newton_steps = polish_log$pol$steps, maxgrad_before = polish_log$pol$maxgrad_start,
                       maxgrad_after = polish_log$pol$maxgrad,
                       raw_objective = polish_log$raw$objective, polished_objective = polish_log$pol$objective)
    res$raw <- short_figs(fr$value); res$tight <- short_figs(ft$value)
    pf <- short_figs(mp)
    res$moved <- list(
      raw_minus_polished_minus2logLik = res$raw$minus2logLik - pf$minus2logLik,
      raw_max_abs_par_change = max(abs(res$raw$par - pf$par)),
      raw_max_abs_beta_change = max(abs(res$raw$beta - pf$beta)),
      raw_max_rel_se_change = max(abs(res$raw$beta_se / pf$beta_se - 1)),
      raw_sigma_change = res$raw$sigma - pf$sigma,
      tight_minus_polished_minus2logLik = res$tight$minus2logLik - pf$minus2logLik,
      tight_max_abs_par_change = max(abs(res$tight$par - pf$par)))
    res$messages <- arr(c(fp$messages)); res$warnings <- arr(c(fp$warnings, post$warnings))
    res$raw_warnings <- arr(fr$warnings)
  } else {
    if (engine == "lmer") {
      f <- capture(lmer(form, data = df, REML = reml))
    } else if (engine == "glmer") {
      fam <- if (famname == "negative.binomial") MASS::negative.binomial(theta = s$nb_theta) else get(famname)()
      base$nb_theta_fixed <- s$nb_theta
      base$link <- fam$link
      f <- capture(glmer(form, data = df, family = fam))
    } else if (engine == "glmer.nb") {
      base$link <- "log"
      f <- capture(glmer.nb(form, data = df))
    } else stop("unknown engine ", engine)
    if (inherits(f$value, "error")) stop(s$id, ": ", conditionMessage(f$value))
    res <- c(base, lme4_figs(f$value))
    res$messages <- arr(f$messages); res$warnings <- arr(f$warnings)
  }
  res$seconds <- proc.time()[["elapsed"]] - t0
  if (!is.null(s$compare_with)) {
    o <- out[[s$compare_with]]
    res$comparison <- list(with = s$compare_with,
      minus2logLik_this_minus_other = res$minus2logLik - o$minus2logLik,
      dispersion_this = if (is.null(res$nb_theta)) res$sigma else res$nb_theta,
      dispersion_other = if (is.null(o$nb_theta)) o$sigma else o$nb_theta,
      beta_this_minus_other = num(res$beta - o$beta),
      dispersion_note = "dispersion: the NB theta (lme4 glmer.nb theta, glmer fixed theta, glmmTMB sigma) or the residual SD")
  }
  out[[s$id]] <- res
  cat(sprintf("%-26s %6.2fs -2ll=%.8f sigma=%.6g maxgrad=%s\n", s$id, res$seconds, res$minus2logLik,
              res$sigma, if (is.null(res$maxgrad)) "-" else format(res$maxgrad, digits = 3)))
  if (!is.null(res$moved)) cat(sprintf("    moved: d(-2ll) raw %.3g tight %.3g; max|dpar| raw %.3g tight %.3g; newton %d, maxgrad %.2g -> %.2g\n",
    res$moved$raw_minus_polished_minus2logLik, res$moved$tight_minus_polished_minus2logLik,
    res$moved$raw_max_abs_par_change, res$moved$tight_max_abs_par_change,
    res$polish$newton_steps, res$polish$maxgrad_before, res$polish$maxgrad_after))
  for (x in res$warnings) cat("    warning:", x, "\n")
}
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE), args[2])
