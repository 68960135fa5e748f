# The binomial/cloglog data of lme4 1.1-31's tests/glmmExt.R (set.seed(101)), written to tests/data/cloglog_glmmExt.csv;
# the fits printed at the end are for comparison (the figures the tests use come from
# make_reference.R on glmmext_spec.json).
suppressMessages(library(lme4))
set.seed(101)
d <- expand.grid(block=LETTERS[1:26], rep=1:100, KEEP.OUT.ATTRS = FALSE)
d$x <- runif(nrow(d)); reff_f <- rnorm(length(levels(d$block)),sd=1)
d$eta0 <- 4+3*d$x; d$eta <- d$eta0+reff_f[d$block]
d$mu <- 1/d$eta; d$y <- rgamma(nrow(d),scale=d$mu/2,shape=2)
dgl <- d; dgl$mu <- exp(d$eta); dgl$y <- rgamma(nrow(d),scale=dgl$mu/2,shape=2)
dP <- d; dP$mu <- exp(d$eta); dP$y <- rpois(nrow(d),dP$mu)
dG <- d; dG$mu <- exp(d$eta); dG$y <- rnorm(nrow(d),dG$mu,sd=2)
dGi <- d; dGi$mu <- 1/d$eta; dGi$y <- rnorm(nrow(d),dGi$mu,sd=0.01)
dBc <- d; cc <- binomial(link="cloglog"); dBc$mu <- cc$linkinv(d$eta - 5)
dBc$y <- rbinom(nrow(d),dBc$mu,size=1)
write.csv(dBc[,c("block","x","y")], "tests/data/cloglog_glmmExt.csv", row.names=FALSE)
for (f in c("y ~ 1 + (1|block)", "y ~ x + (1|block)")) {
  m <- glmer(as.formula(f), data=dBc, family=binomial(link="cloglog"))
  cat(f, sprintf("%.6f", deviance(m)), sprintf("%.6f", -2*logLik(m)), getME(m,"theta"), fixef(m), sqrt(diag(vcov(m))), "\n")
}
