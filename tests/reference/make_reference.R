# Fit each model of a spec with lme4 and write everything a port must reproduce.
# Based on the team's shared tools/make_reference.R; same fields, same names and shapes, plus extras.
#
# usage: Rscript tests/reference/make_reference.R SPEC.json DATADIR OUT.json [DATADIR2]
#   e.g. (from the repository root)
#   Rscript tests/reference/make_reference.R tests/reference/extra_spec.json tests/data \
#           tests/reference/lme4_extra.json hmix/datasets/data
#
# A spec entry: id, data (CSV name without .csv, looked up in DATADIR, then DATADIR2), factors,
# binary (Y/N columns made 0/1), r_formula, py_formula, REML, and optionally family, link, nAGQ,
# weights (a column name, lmer/glmer weights=) and offset (a column name, the offset= argument),
# and tight (glmer's optimizer to tight tolerances: nloptwrap with ftol_abs 1e-12).
# CSV fields that are empty or "NA" are missing; lme4's default na.action (na.omit) drops them.
#
# Extra fields beyond the shared script:
#   n_rows (rows in the CSV), n_dropped (rows removed for NA: n_rows - nobs),
#   fixef_dropped (names of fixed-effect columns lme4 dropped for rank deficiency),
#   messages, warnings (what lme4 printed while fitting, captured; always arrays),
#   conv_messages (m@optinfo$conv$lme4$messages: what the shared script calls `messages`),
#   post_fit_warnings (warnings from vcov/ranef/lmerTest after the fit), link, weights, offset.
# Note: `messages` here is every message() lme4 printed during the fit (e.g. the singular-fit
# and rank-deficiency notes), always an array; the shared file's `messages` held only the
# optimizer-check messages, which are now `conv_messages`.
suppressMessages({library(lme4); library(jsonlite); library(lmerTest)})
args <- commandArgs(TRUE)
if (length(args) < 3) stop("usage: Rscript make_reference.R SPEC.json DATADIR OUT.json [DATADIR2]")
spec <- fromJSON(args[1], simplifyVector = FALSE)
datadirs <- c(args[2], if (length(args) >= 4) args[4])
cap <- function(x, n = 200) if (length(x) > n) x[seq_len(n)] else x
arr <- function(x) I(as.character(unlist(x)))  # always a JSON array, even of length 0 or 1

find_csv <- function(name) {
  paths <- file.path(datadirs, paste0(name, ".csv"))
  hit <- paths[file.exists(paths)]
  if (!length(hit)) stop("no ", name, ".csv in ", paste(datadirs, collapse = " or "))
  hit[1]
}

# Evaluate expr, collecting (and muffling) its messages and warnings.
capture <- function(expr) {
  msgs <- character(); warns <- character()
  value <- withCallingHandlers(
    tryCatch(expr, error = function(e) e),
    message = function(c) {
      msgs <<- c(msgs, sub("\n$", "", conditionMessage(c))); invokeRestart("muffleMessage")
    },
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning")
    })
  list(value = value, messages = msgs, warnings = warns)
}

out <- list()
for (s in spec) {
  df <- read.csv(find_csv(s$data), na.strings = c("NA", ""))
  for (f in unlist(s$factors)) df[[f]] <- factor(df[[f]])
  for (b in unlist(s$binary)) df[[b]] <- as.integer(df[[b]] == "Y")
  fam <- if (is.null(s$family)) "gaussian" else s$family
  link <- if (fam == "gaussian") "identity" else if (is.null(s$link)) switch(fam, binomial = "logit", poisson = "log") else s$link
  nagq <- if (is.null(s$nAGQ)) 1 else s$nAGQ
  form <- as.formula(s$r_formula)
  # weights= and offset= name columns of df (lme4 evaluates them in the data)
  extra <- list()
  if (!is.null(s$weights)) extra$weights <- as.name(s$weights)
  if (!is.null(s$offset)) extra$offset <- as.name(s$offset)
  # "tight": lme4's optimizers run to tight tolerances (its defaults stop short on some models)
  if (isTRUE(s$tight)) extra$control <- quote(glmerControl(optimizer = "nloptwrap",
    optCtrl = list(ftol_abs = 1e-12, ftol_rel = 1e-14, xtol_abs = 1e-10, xtol_rel = 0, maxeval = 1e5)))
  cl <- if (fam == "gaussian") {
    as.call(c(list(quote(lmer), formula = form, data = quote(df), REML = isTRUE(s$REML)), extra))
  } else {
    famobj <- get(fam)(link = link)
    as.call(c(list(quote(glmer), formula = form, data = quote(df), family = famobj, nAGQ = nagq), extra))
  }
  t0 <- proc.time()[["elapsed"]]
  fit <- capture(eval(cl))
  secs <- proc.time()[["elapsed"]] - t0
  m <- fit$value
  for (x in fit$messages) cat(sprintf("  [%s] message: %s\n", s$id, x))
  for (x in fit$warnings) cat(sprintf("  [%s] warning: %s\n", s$id, x))
  if (inherits(m, "error")) {  # lme4 refuses this model: a port must refuse it too
    out[[s$id]] <- list(id = s$id, data = s$data, r_formula = s$r_formula, family = fam, error = conditionMessage(m),
                        messages = arr(fit$messages), warnings = arr(fit$warnings))
    cat(sprintf("%-22s refused: %s\n", s$id, substr(conditionMessage(m), 1, 80)))
    next
  }
  post <- capture({
    vc <- as.data.frame(VarCorr(m))
    rdf <- as.data.frame(ranef(m, condVar = TRUE))
    fe <- fixef(m); V <- as.matrix(vcov(m))
    sm <- if (fam == "gaussian" && isREML(m)) tryCatch(summary(as(m, "lmerModLmerTest"))$coefficients,
                                                       error = function(e) NULL)
    NULL
  })
  if (inherits(post$value, "error")) stop(s$id, ": ", conditionMessage(post$value))
  ranefs <- lapply(unique(as.character(rdf$grpvar)), function(g) {
    sub <- rdf[rdf$grpvar == g, ]
    terms <- unique(as.character(sub$term))
    lev <- unique(as.character(sub$grp))
    list(group = g, terms = terms, levels = cap(lev), n_levels = length(lev),
         modes = lapply(terms, function(t) cap(sub$condval[sub$term == t])),
         condsd = lapply(terms, function(t) cap(sub$condsd[sub$term == t])))
  })
  dropped <- attr(getME(m, "X"), "col.dropped")
  res <- list(id = s$id, data = s$data, r_formula = s$r_formula,
    family = fam, REML = isTRUE(s$REML) && fam == "gaussian",
    nAGQ = nagq,
    nobs = nobs(m), ngroups = as.list(ngrps(m)),
    theta = unname(getME(m, "theta")), theta_names = names(getME(m, "theta")),
    beta = unname(fe), beta_names = names(fe), beta_se = unname(sqrt(diag(V))),
    vcov_beta = unname(V),
    sigma = sigma(m), deviance = if (isREML(m)) NULL else deviance(m),
    reml_criterion = if (isREML(m)) unname(REMLcrit(m)) else NULL,
    objective = unname(if (isREML(m)) REMLcrit(m) else if (fam == "gaussian") deviance(m) else -2 * as.numeric(logLik(m))),
    logLik = as.numeric(logLik(m)), df = attr(logLik(m), "df"),
    AIC = AIC(m), BIC = BIC(m), singular = isSingular(m),
    varcorr = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i],
      var1 = vc$var1[i], var2 = vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])),
    ranef = ranefs,
    fitted = cap(unname(fitted(m))), fitted_sumsq = sum(fitted(m)^2),
    resid = cap(unname(residuals(m))),
    lme4_seconds = secs, lme4_version = as.character(packageVersion("lme4")),
    messages = arr(fit$messages),
    # extras
    warnings = arr(fit$warnings),
    conv_messages = arr(m@optinfo$conv$lme4$messages),
    post_fit_warnings = arr(post$warnings),
    link = link, weights = s$weights, offset = s$offset,
    n_rows = nrow(df), n_dropped = nrow(df) - nobs(m),
    fixef_dropped = arr(names(dropped)))
  if (!is.null(sm)) {
    res$satterthwaite_df <- unname(sm[, "df"])
    res$satterthwaite_p <- unname(sm[, "Pr(>|t|)"])
  }
  out[[s$id]] <- res
  cat(sprintf("%-22s %8.3fs obj=%.6f\n", s$id, secs, res$objective))
}
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE), args[3])
