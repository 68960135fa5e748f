# Small-sample t-tests of fixed effects: lmerTest's Satterthwaite and pbkrtest's Kenward-Roger.
# Companion of make_reference.R: same spec files, same data lookup, figures for hmix's coef_table(ddf=).
#
# usage (from the repository root):
#   Rscript tests/reference/make_ddf_reference.R tests/reference/lme4_ddf.json
#
# The models are entries of tests/reference/public_spec.json and extra_spec.json, named in CASES
# below; their data come from tests/data or hmix/datasets/data. For each model:
#   satterthwaite: df, se, t, p of summary(<lmerModLmerTest>, ddf = "Satterthwaite") (ML or REML);
#   kenward_roger (REML fits only): df, se (from pbkrtest::vcovAdj), t, p of
#     summary(ddf = "Kenward-Roger"), and vcov_adj, the whole adjusted covariance matrix;
#   theta, beta_names, vcov_beta (lme4's unadjusted covariance), to see how close a port's fit is.
# Not included: prior weights with Kenward-Roger (pbkrtest builds Sigma with an identity residual
# part, ignoring the weights that vcov(m) uses, so its figures are not the weighted model's).
suppressMessages({library(lme4); library(jsonlite); library(lmerTest); library(pbkrtest)})
args <- commandArgs(TRUE)
if (length(args) < 1) stop("usage: Rscript make_ddf_reference.R OUT.json")
refdir <- "tests/reference"
datadirs <- c("tests/data", "hmix/datasets/data")

CASES <- list(
  list(spec = "public_spec.json", id = "sleepstudy_reml", kr = TRUE),
  list(spec = "public_spec.json", id = "sleepstudy_ml", kr = FALSE),
  list(spec = "public_spec.json", id = "sleepstudy_uncorr", kr = TRUE),
  list(spec = "public_spec.json", id = "penicillin_crossed", kr = TRUE),
  list(spec = "public_spec.json", id = "pastes_nested", kr = TRUE),
  list(spec = "extra_spec.json", id = "sleep_na", kr = TRUE),
  list(spec = "extra_spec.json", id = "sleep_interaction", kr = TRUE),
  list(spec = "extra_spec.json", id = "sleep_factor_slope_int", kr = TRUE),
  list(spec = "extra_spec.json", id = "penicillin_ml", kr = FALSE),
  list(spec = "extra_spec.json", id = "sleep_weights_ml", kr = FALSE)
)

find_csv <- function(name) {
  paths <- file.path(datadirs, paste0(name, ".csv"))
  hit <- paths[file.exists(paths)]
  if (!length(hit)) stop("no ", name, ".csv in ", paste(datadirs, collapse = " or "))
  hit[1]
}

ttable <- function(m, ddf) {
  cf <- summary(m, ddf = ddf)$coefficients
  list(df = unname(cf[, "df"]), se = unname(cf[, "Std. Error"]), t = unname(cf[, "t value"]),
       p = unname(cf[, "Pr(>|t|)"]))
}

out <- list()
for (case in CASES) {
  specs <- fromJSON(file.path(refdir, case$spec), simplifyVector = FALSE)
  s <- Filter(function(x) x$id == case$id, specs)[[1]]
  df <- read.csv(find_csv(s$data), na.strings = c("NA", ""))
  for (f in unlist(s$factors)) df[[f]] <- factor(df[[f]])
  extra <- list()
  if (!is.null(s$weights)) extra$weights <- as.name(s$weights)
  if (!is.null(s$offset)) extra$offset <- as.name(s$offset)
  cl <- as.call(c(list(quote(lmerTest::lmer), formula = as.formula(s$r_formula), data = quote(df),
                       REML = isTRUE(s$REML)), extra))
  m <- suppressMessages(eval(cl))
  res <- list(id = s$id, spec = case$spec, r_formula = s$r_formula, REML = isTRUE(s$REML),
              theta = unname(getME(m, "theta")), beta_names = names(fixef(m)),
              vcov_beta = unname(as.matrix(vcov(m))),
              satterthwaite = ttable(m, "Satterthwaite"))
  if (case$kr) {
    res$kenward_roger <- ttable(m, "Kenward-Roger")
    res$kenward_roger$vcov_adj <- unname(as.matrix(vcovAdj(m)))
  }
  out[[s$id]] <- res
  cat(sprintf("%-24s Satterthwaite df %s%s\n", s$id, toString(signif(res$satterthwaite$df, 6)),
              if (case$kr) paste0("; Kenward-Roger df ", toString(signif(res$kenward_roger$df, 6))) else ""))
}
out$versions <- list(lme4 = as.character(packageVersion("lme4")),
                     lmerTest = as.character(packageVersion("lmerTest")),
                     pbkrtest = as.character(packageVersion("pbkrtest")))
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE), args[1])
