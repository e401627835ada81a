# tests/law/synth.sh: sourced by the law test scripts with $tmp set. Writes
# a synthetic sweep generated from known D-CPT laws (the same laws as
# tests/c/test_law_fit.c), with a deterministic +-0.1% wobble standing in for
# noise: $tmp/sweep.jsonl and the same rows as $tmp/sweep.csv (4 sizes x 5
# token counts x 7 ratios), and $tmp/cross.jsonl (4 domains with k1, k2,
# domain loss only). Defines the awk functions lg, ld (general and domain
# loss at N, D, r_domain) in $lawfn and lx (cross-domain) in $crossfn.

lawfn='function law(E,A,al,B,eta,be,C,ga,eps,N,D,r) {
         return E + A*exp(-al*log(N)) + (r > 0 ? B*exp(eta*log(r) - be*log(D)) : 0) + C*exp(-ga*log(r+eps)) }
       function lg(N,D,rd) { return law(1.8,300,0.32,40,0.6,0.28,0.25,0.7,0.08,N,D,1-rd) }
       function ld(N,D,rd) { return law(1.5,400,0.35,50,0.5,0.3,0.4,0.6,0.05,N,D,rd) }'

awk "$lawfn"'BEGIN {
  split("5e7 1e8 2e8 4e8", Ns, " "); split("2e8 5e8 1e9 2e9 5e9", Ds, " ")
  split("0 0.1 0.25 0.5 0.75 0.9 1", rs, " ")
  print "N,D,r_domain,loss_general,loss_domain" > "'"$tmp"'/sweep.csv"
  i = 0
  for (a = 1; a <= 4; a++) for (b = 1; b <= 5; b++) for (c = 1; c <= 7; c++) {
    N = Ns[a] + 0; D = Ds[b] + 0; r = rs[c] + 0; i++
    g = lg(N, D, r) * (1 + 0.001 * sin(i)); d = ld(N, D, r) * (1 + 0.001 * cos(3 * i))
    printf "{\"N\": %.17g, \"D\": %.17g, \"r_domain\": %.17g, \"loss_general\": %.17g, \"loss_domain\": %.17g}\n", N, D, r, g, d
    printf "%.17g,%.17g,%.17g,%.17g,%.17g\n", N, D, r, g, d > "'"$tmp"'/sweep.csv"
  } }' > "$tmp/sweep.jsonl"

crossfn='function lx(N,D,r,k1,k2) { return law(1.5,400,0.35,50,0.5,0.3,0.4,0.6,0.05,N,D,r) + 0.5*exp(-1.2*log(0.6/k1 + 0.4*k2)) }'
awk "$lawfn $crossfn"'BEGIN {
  split("2.2 2.8 3.4 2.5", k1s, " "); split("0.30 0.12 0.20 0.08", k2s, " ")
  split("5e7 1.5e8 4e8", Ns, " "); split("3e8 1e9 4e9", Ds, " "); split("0.1 0.3 0.6 1", rs, " ")
  i = 0
  for (k = 1; k <= 4; k++) for (a = 1; a <= 3; a++) for (b = 1; b <= 3; b++) for (c = 1; c <= 4; c++) {
    i++; N = Ns[a] + 0; D = Ds[b] + 0; r = rs[c] + 0
    printf "{\"domain\": \"d%d\", \"k1\": %s, \"k2\": %s, \"N\": %.17g, \"D\": %.17g, \"r_domain\": %.17g, \"loss_domain\": %.17g}\n", k, k1s[k], k2s[k], N, D, r, lx(N, D, r, k1s[k] + 0, k2s[k] + 0) * (1 + 0.001 * sin(i))
  } }' > "$tmp/cross.jsonl"
