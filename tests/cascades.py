"""Cascades of the FuseMax paper written once, shared by the tests (reference/fusemax.md, section 1)."""

CASCADE5 = """\
input Q[e, p], K[e, m], V[f, m]
param M0 = 4
rank M = M1 * M0
output AV
BK[e, m1, m0]   = K[e, m1 * M0 + m0]
BV[f, m1, m0]   = V[f, m1 * M0 + m0]
RM[0, p]        = -inf
RD[0, p]        = 0
RNV[f, 0, p]    = 0
BQK[m1, m0, p]  = Q[e, p] * BK[e, m1, m0]
LM[m1, p]       = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]   = max(RM[m1, p], LM[m1, p])
SLN[m1, m0, p]  = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]      = SLN[m1, m0, p]
SLNV[f, m1, p]  = SLN[m1, m0, p] * BV[f, m1, m0]
PRM[m1, p]      = exp(RM[m1, p] - RM[m1 + 1, p])
SPD[m1, p]      = RD[m1, p] * PRM[m1, p]
RD[m1 + 1, p]   = SLD[m1, p] + SPD[m1, p]
SPNV[f, m1, p]  = RNV[f, m1, p] * PRM[m1, p]
RNV[f, m1 + 1, p] = SLNV[f, m1, p] + SPNV[f, m1, p]
AV[f, p]        = RNV[f, M1, p] / RD[M1, p]
"""
