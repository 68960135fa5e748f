# Write the data sets behind glmmtmb_families.json, glmmtmb_covstruct.json and
# lme4_nested_large.json into tests/data (deterministic: every simulation has a fixed seed).
#
# usage (from the repository root):
#   Rscript tests/reference/make_glmmtmb_blme_data.R [OUTDIR]      (OUTDIR default tests/data)
#
# Files written:
#   Salamanders.csv    glmmTMB 1.1.5's Salamanders data (644 rows), as shipped
#   Owls.csv           glmmTMB 1.1.5's Owls data (599 rows), as shipped
#   gamma_sim.csv      40 groups g x 10 rows; x ~ U(-1, 1); group intercepts b ~ N(0, 0.5^2);
#                      Gamma with shape 3 (sigma = CV = 1/sqrt(3)), three responses:
#                        y_log      mean exp(1 + 0.5 x + b)
#                        y_inverse  mean 1 / (2.5 + 0.5 x + b)   (all linear predictors > 0)
#                        y_identity mean 5 + x + b
#   ar1_sim.csv        60 subjects id x 8 equally spaced occasions (time = 1..8, a factor; tnum the
#                      same number); subject effects u_id ~ N(0, S), S[j,k] = 0.6^|j-k| (SD 1);
#                      y = 1 + 0.5 x + 0.2 tnum + u + e, e ~ N(0, 0.5^2); x ~ N(0, 1)
#   cs_sim.csv         60 subjects id x 3 conditions cond (A, B, C) x 4 replicates; subject x condition
#                      effects ~ N(0, S), S = D R D, D = diag(1, 1.3, 0.8), R compound symmetry rho 0.5;
#                      y = 2 + (0, 0.5, -0.3)[cond] + u + e, e ~ N(0, 0.7^2)
#   poisson_sim.csv    50 groups g x 12 rows; x ~ U(-1, 1); independent group intercepts (SD 0.5) and
#                      slopes of x (SD 0.4); count ~ Poisson(exp(0.5 + 0.3 x + a_g + b_g x))
#   nested_large.csv.gz 21,000 schools x 2 classes x 3 students (126,000 rows); school SD 1,
#                      class-within-school SD 0.5, residual SD 1; y = 10 + 2 x + ...; x ~ N(0, 1);
#                      x and y rounded to 4 significant digits; class is "1"/"2" within school
# Numbers are written with up to 15 significant digits (signif(., 15)) unless said otherwise, so
# the references are computed from exactly what a reader of the CSV gets.
suppressMessages(library(glmmTMB))
args <- commandArgs(TRUE)
outdir <- if (length(args)) args[1] else "tests/data"
w <- function(df, name) {
  write.csv(df, file.path(outdir, name), row.names = FALSE)
  cat(sprintf("%-22s %7d rows\n", name, nrow(df)))
}

data(Salamanders, package = "glmmTMB")
data(Owls, package = "glmmTMB")
w(Salamanders, "Salamanders.csv")
w(Owls, "Owls.csv")

# Gamma
set.seed(20240101)
G <- 40; n <- 10
gi <- rep(seq_len(G), each = n)
x <- round(runif(G * n, -1, 1), 4)
b <- rnorm(G, 0, 0.5)[gi]
shape <- 3
mu_log <- exp(1 + 0.5 * x + b)
eta_inv <- 2.5 + 0.5 * x + b
stopifnot(all(eta_inv > 0.2))
mu_inv <- 1 / eta_inv
mu_id <- 5 + x + b
gam <- data.frame(g = sprintf("g%02d", gi), x = x,
                  y_log = signif(rgamma(G * n, shape = shape, rate = shape / mu_log), 6),
                  y_inverse = signif(rgamma(G * n, shape = shape, rate = shape / mu_inv), 6),
                  y_identity = signif(rgamma(G * n, shape = shape, rate = shape / mu_id), 6))
w(gam, "gamma_sim.csv")

# AR(1) longitudinal
set.seed(20240102)
N <- 60; Tn <- 8; rho <- 0.6
S <- rho^abs(outer(1:Tn, 1:Tn, "-"))
U <- matrix(rnorm(N * Tn), N, Tn) %*% chol(S)          # rows ~ N(0, S)
id <- rep(seq_len(N), each = Tn); tnum <- rep(1:Tn, N)
x <- round(rnorm(N * Tn), 4)
y <- 1 + 0.5 * x + 0.2 * tnum + U[cbind(id, tnum)] + rnorm(N * Tn, 0, 0.5)
w(data.frame(id = sprintf("s%02d", id), time = tnum, tnum = tnum, x = x, y = signif(y, 10)),
  "ar1_sim.csv")

# compound symmetry, 3 conditions, replicates
set.seed(20240103)
N <- 60; K <- 3; R <- 4; rho <- 0.5
sds <- c(1, 1.3, 0.8)
Sig <- diag(sds) %*% (matrix(rho, K, K) + diag(1 - rho, K)) %*% diag(sds)
U <- matrix(rnorm(N * K), N, K) %*% chol(Sig)
d <- expand.grid(rep = seq_len(R), k = seq_len(K), i = seq_len(N))
y <- 2 + c(0, 0.5, -0.3)[d$k] + U[cbind(d$i, d$k)] + rnorm(nrow(d), 0, 0.7)
w(data.frame(id = sprintf("p%02d", d$i), cond = LETTERS[d$k], rep = d$rep, y = signif(y, 10)),
  "cs_sim.csv")

# Poisson with independent random intercepts and slopes
set.seed(20240105)
G <- 50; n <- 12
gi <- rep(seq_len(G), each = n)
x <- round(runif(G * n, -1, 1), 4)
a <- rnorm(G, 0, 0.5); b <- rnorm(G, 0, 0.4)
w(data.frame(g = sprintf("g%02d", gi), x = x, count = rpois(G * n, exp(0.5 + 0.3 * x + a[gi] + b[gi] * x))),
  "poisson_sim.csv")

# large nested design
set.seed(20240104)
S <- 21000; C <- 2; P <- 3
d <- expand.grid(student = seq_len(P), class = seq_len(C), school = seq_len(S))
ci <- (d$school - 1) * C + d$class
x <- signif(rnorm(nrow(d)), 4)
y <- 10 + 2 * x + rnorm(S, 0, 1)[d$school] + rnorm(S * C, 0, 0.5)[ci] + rnorm(nrow(d), 0, 1)
nl <- data.frame(school = d$school, class = d$class, x = x, y = signif(y, 4))
con <- gzfile(file.path(outdir, "nested_large.csv.gz"), "w")
write.csv(nl, con, row.names = FALSE)
close(con)
cat(sprintf("%-22s %7d rows\n", "nested_large.csv.gz", nrow(nl)))
