# Figures for what lme4 and statsmodels users reach for: lmerTest's anova tables, lme4's coef()
# and performance's r2_nakagawa, for tests/test_anova.py and tests/test_api.py.
#
# usage (from the repository root):
#   Rscript tests/reference/make_api_reference.R tests/reference/api_reference.json
#
# Versions: lme4 1.1-31 (or what is installed), lmerTest 3.1-3, pbkrtest 0.5.2, car 3.1-1,
# performance 0.10.2 with insight 0.19.0 (Debian's r-cran-performance). The versions are written to the JSON.
#
# Data: tests/data (ham.csv is lmerTest's `ham`, written with write.csv; grouseticks.csv,
# sleepstudy_extra.csv) or hmix/datasets/data. `factors` columns become R factors (strings in
# Python). A `drop_every` entry k drops rows 1, 1 + k, 1 + 2k, ... (Python: iloc[::k]) to make
# a balanced design unbalanced.
#
# anova: for each model, anova(m, type, ddf) of lmerTest for the listed (type, ddf) pairs, with
#   the term names, Sum Sq, Mean Sq, NumDF, DenDF, F value and Pr(>F), and the hypothesis
#   matrices lmerTest used (attr "hypotheses") with their column names.
# wald: car::Anova(m, type = 3) of a GLMM fitted with contr.sum codings (chi-square, df, p).
# coef: coef(m) per grouping factor: level names, column names and the values (row-major).
# r2: performance::r2_nakagawa(m) (conditional, marginal), and `by_hand`: the same definitions
#   written out below (r2_by_hand). They differ in two places: for Poisson models insight 0.19
#   takes log(1 + 1/mu) with mu = exp(intercept of the null model, the model refitted with ~ 1
#   and the same random effects), by_hand (hmix's default) the fitted rows' mean of
#   exp(X beta + offset + z' Sigma z / 2) (both count the variance of an observation-level
#   random intercept with the residual); and for (Days || Subject) performance 0.10.2 leaves
#   the slope's variance out of var_random (its marginal R^2 0.415 is var_fixed over
#   var_fixed + the intercept's variance + sigma^2), by_hand keeps it.
suppressMessages({
  library(lme4); library(jsonlite); library(lmerTest); library(pbkrtest); library(performance)
})
args <- commandArgs(TRUE)
if (length(args) < 1) stop("usage: Rscript make_api_reference.R OUT.json")
datadirs <- c("tests/data", "hmix/datasets/data")

find_csv <- function(name) {
  paths <- file.path(datadirs, paste0(name, ".csv"))
  hit <- paths[file.exists(paths)]
  if (!length(hit)) stop("no ", name, ".csv in ", paste(datadirs, collapse = " or "))
  hit[1]
}

load <- function(s) {
  df <- read.csv(find_csv(s$data), na.strings = c("NA", ""))
  if (!is.null(s$drop_every)) df <- df[-seq(1, nrow(df), by = s$drop_every), ]
  for (f in unlist(s$factors)) df[[f]] <- factor(df[[f]])
  df
}

fit <- function(s, df) {
  f <- as.formula(s$formula)
  if (is.null(s$family)) return(suppressMessages(lmerTest::lmer(f, data = df, REML = s$REML)))
  fam <- get(s$family)(link = if (is.null(s$link)) switch(s$family, binomial = "logit", poisson = "log") else s$link)
  suppressMessages(glmer(f, data = df, family = fam))
}

ANOVA <- list(
  list(id = "ham_3way", data = "ham", factors = c("Consumer", "Product", "Information", "Gender"),
       formula = "Informed.liking ~ Product * Information * Gender + (1 | Consumer) + (1 | Consumer:Product)",
       REML = TRUE, tests = list(c("3", "Satterthwaite"), c("3", "Kenward-Roger"), c("1", "Satterthwaite"),
                                 c("1", "Kenward-Roger"))),
  list(id = "ham_3way_ml", data = "ham", factors = c("Consumer", "Product", "Information", "Gender"),
       formula = "Informed.liking ~ Product * Information * Gender + (1 | Consumer) + (1 | Consumer:Product)",
       REML = FALSE, tests = list(c("3", "Satterthwaite"))),
  list(id = "ham_unbalanced_age", data = "ham", factors = c("Consumer", "Product", "Information"),
       drop_every = 7,
       formula = "Informed.liking ~ Product * Information + Age + Product:Age + (1 | Consumer)",
       REML = TRUE, tests = list(c("3", "Satterthwaite"), c("3", "Kenward-Roger"), c("1", "Satterthwaite"))),
  list(id = "sleep_phase", data = "sleepstudy_extra", factors = c("Subject", "phase"),
       formula = "Reaction ~ Days * phase + (Days | Subject)",
       REML = TRUE, tests = list(c("3", "Satterthwaite"), c("3", "Kenward-Roger"), c("1", "Satterthwaite"))),
  list(id = "sleep_slope_by_phase", data = "sleepstudy_extra", factors = c("Subject", "phase"),
       formula = "Reaction ~ Days + Days:phase + (1 | Subject)",
       REML = TRUE, tests = list(c("3", "Satterthwaite"), c("3", "Kenward-Roger"))),
  list(id = "sleep_poly", data = "sleepstudy", factors = c("Subject"),
       formula = "Reaction ~ Days + I(Days^2) + (Days | Subject)",
       REML = TRUE, tests = list(c("3", "Satterthwaite"), c("3", "Kenward-Roger"))),
  list(id = "sleep_single", data = "sleepstudy", factors = c("Subject"),
       formula = "Reaction ~ Days + (Days | Subject)",
       REML = TRUE, tests = list(c("3", "Satterthwaite"), c("3", "Kenward-Roger")))
)

# GLMMs: car::Anova(m, type = 3), Wald chi-square tests, with every factor coded by contr.sum
# (type III hypotheses are then SAS's, which hmix builds whatever the coding).
WALD <- list(
  list(id = "grouse_year_height", data = "grouseticks", factors = c("BROOD", "LOCATION", "YEAR"),
       formula = "TICKS ~ YEAR * cHEIGHT + (1 | BROOD) + (1 | LOCATION)", family = "poisson")
)

COEF <- list(
  list(id = "sleepstudy", data = "sleepstudy", factors = c("Subject"),
       formula = "Reaction ~ Days + (Days | Subject)", REML = TRUE),
  list(id = "sleep_slope_not_fixed", data = "sleepstudy", factors = c("Subject"),
       formula = "Reaction ~ 1 + (Days | Subject)", REML = TRUE),
  list(id = "penicillin", data = "Penicillin", factors = c("plate", "sample"),
       formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", REML = TRUE),
  list(id = "cbpp", data = "cbpp", factors = c("herd", "period"),
       formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)", family = "binomial")
)

R2 <- list(
  list(id = "sleepstudy", data = "sleepstudy", factors = c("Subject"),
       formula = "Reaction ~ Days + (Days | Subject)", REML = TRUE),
  list(id = "sleepstudy_uncorr", data = "sleepstudy", factors = c("Subject"),
       formula = "Reaction ~ Days + (Days || Subject)", REML = TRUE),
  list(id = "penicillin", data = "Penicillin", factors = c("plate", "sample"),
       formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", REML = TRUE),
  list(id = "ham_3way", data = "ham", factors = c("Consumer", "Product", "Information", "Gender"),
       formula = "Informed.liking ~ Product * Information * Gender + (1 | Consumer) + (1 | Consumer:Product)",
       REML = TRUE),
  list(id = "cbpp_logit", data = "cbpp", factors = c("herd", "period"),
       formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)", family = "binomial"),
  list(id = "cbpp_probit", data = "cbpp", factors = c("herd", "period"),
       formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)", family = "binomial",
       link = "probit"),
  list(id = "cbpp_cloglog", data = "cbpp", factors = c("herd", "period"),
       formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)", family = "binomial",
       link = "cloglog"),
  list(id = "grouse_poisson", data = "grouseticks", factors = c("INDEX", "BROOD", "LOCATION", "YEAR"),
       formula = "TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
       family = "poisson")
)

anova_entry <- function(s) {
  df <- load(s)
  m <- fit(s, df)
  tables <- lapply(s$tests, function(tt) {
    a <- anova(m, type = as.integer(tt[1]), ddf = tt[2])
    hyp <- attr(a, "hypotheses")
    list(type = tt[1], ddf = tt[2], terms = I(rownames(a)), sum_sq = I(unname(a[["Sum Sq"]])),
         mean_sq = I(unname(a[["Mean Sq"]])), num_df = I(unname(a[["NumDF"]])),
         den_df = I(unname(a[["DenDF"]])), F = I(unname(a[["F value"]])), p = I(unname(a[["Pr(>F)"]])),
         hypotheses = lapply(hyp, function(L) list(columns = I(colnames(L)),
                                                   rows = lapply(unname(split(L, row(L))), I))))
  })
  list(id = s$id, data = s$data, factors = I(s$factors), drop_every = s$drop_every, r_formula = s$formula,
       REML = s$REML, beta_names = names(fixef(m)), theta = unname(getME(m, "theta")), tables = tables)
}

wald_entry <- function(s) {
  old <- options(contrasts = c("contr.sum", "contr.poly"))
  on.exit(options(old))
  m <- fit(s, load(s))
  a <- car::Anova(m, type = 3)
  a <- a[rownames(a) != "(Intercept)", , drop = FALSE]
  list(id = s$id, data = s$data, factors = I(s$factors), r_formula = s$formula, family = s$family,
       terms = I(rownames(a)), chisq = I(unname(a[["Chisq"]])), df = I(unname(a[["Df"]])),
       p = I(unname(a[["Pr(>Chisq)"]])))
}

coef_entry <- function(s) {
  m <- fit(s, load(s))
  cf <- coef(m)
  list(id = s$id, data = s$data, factors = I(s$factors), r_formula = s$formula, family = s$family,
       REML = isTRUE(s$REML),
       groups = lapply(cf, function(d) list(levels = I(rownames(d)), columns = I(colnames(d)),
                                            values = lapply(unname(split(as.matrix(d), row(d))), I))))
}

r2_by_hand <- function(m) {
  # Nakagawa & Schielzeth's R^2 with Johnson's random-slope term, written out: var_fixed the
  # sample variance of X beta; var_random the mean over rows of z' Sigma z per term (the term's own
  # model matrix); the residual sigma^2 (Gaussian), pi^2/3, 1, pi^2/6 (binomial logit, probit,
  # cloglog) or log(1 + 1/mu) (Poisson log) with hmix's mu = mean over the rows of
  # exp(X beta + offset + the row's random variance / 2).
  X <- model.matrix(m)
  fixed <- drop(X %*% fixef(m))
  vc <- VarCorr(m)
  mm <- getME(m, "mmList")
  per_row <- Reduce(`+`, lapply(seq_along(mm), function(i) {
    Z <- as.matrix(mm[[i]]); S <- as.matrix(vc[[i]])
    rowSums((Z %*% S) * Z)
  }))
  # an observation-level random intercept (a level per row) of a GLMM is overdispersion: its
  # variance goes with the residual (Nakagawa, Johnson & Schielzeth 2017, as insight does)
  fam <- family(m)
  olre <- sapply(seq_along(mm), function(i) {
    fam$family != "gaussian" && ncol(mm[[i]]) == 1 && nlevels(getME(m, "flist")[[names(vc)[i]]]) == nobs(m)
  })
  var_olre <- sum(vapply(vc[olre], function(v) v[1, 1], numeric(1)))
  var_fixed <- var(fixed)
  var_random <- mean(per_row) - var_olre
  mu <- NA
  resid <- if (fam$family == "gaussian") sigma(m)^2 else if (fam$family == "binomial") {
    switch(fam$link, logit = pi^2 / 3, probit = 1, cloglog = pi^2 / 6)
  } else {
    off <- model.offset(model.frame(m))
    mu <- mean(exp(fixed + (if (is.null(off)) 0 else off) + per_row / 2))
    log1p(1 / mu)
  }
  resid <- resid + var_olre
  total <- var_fixed + var_random + resid
  list(conditional = (var_fixed + var_random) / total, marginal = var_fixed / total,
       var_fixed = var_fixed, var_random = var_random, var_residual = resid, mu = mu)
}

r2_entry <- function(s) {
  m <- fit(s, load(s))
  r <- suppressWarnings(r2_nakagawa(m))
  out <- list(id = s$id, data = s$data, factors = I(s$factors), r_formula = s$formula,
              family = if (is.null(s$family)) "gaussian" else s$family, link = s$link,
              REML = isTRUE(s$REML), conditional = unname(r$R2_conditional),
              marginal = unname(r$R2_marginal))
  out$by_hand <- r2_by_hand(m)
  out
}

out <- list(
  anova = setNames(lapply(ANOVA, anova_entry), sapply(ANOVA, `[[`, "id")),
  wald = setNames(lapply(WALD, wald_entry), sapply(WALD, `[[`, "id")),
  coef = setNames(lapply(COEF, coef_entry), sapply(COEF, `[[`, "id")),
  r2 = setNames(lapply(R2, r2_entry), sapply(R2, `[[`, "id")),
  versions = list(R = as.character(getRversion()), lme4 = as.character(packageVersion("lme4")),
                  lmerTest = as.character(packageVersion("lmerTest")),
                  pbkrtest = as.character(packageVersion("pbkrtest")),
                  performance = as.character(packageVersion("performance")),
                  insight = as.character(packageVersion("insight")),
                  car = as.character(packageVersion("car")))
)
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE), args[1])
for (a in out$anova) for (t in a$tables)
  cat(sprintf("%-20s type %s %-13s F %s DenDF %s\n", a$id, t$type, t$ddf, toString(signif(t$F, 5)),
              toString(signif(t$den_df, 5))))
for (r in out$r2) cat(sprintf("%-18s R2 conditional %.6f marginal %.6f\n", r$id, r$conditional, r$marginal))
