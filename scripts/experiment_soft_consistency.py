"""Experiment (not part of the shipped sampler): exact vs Tikhonov-regularised consistency projection.

    python weights/experiment_soft_consistency.py WEIGHTS data-work/val.npz

Runs the model as a 1-step posterior mean (LR-start, start 1.0) on the validation cache and scores: no projection,
the exact projection (rssr_cli.degrade.project_consistent), and sr + D^T (D D^T + lam I)^-1 (lr - D sr) per axis for
a few lam. Uses private helpers of rssr_cli.degrade / rssr_cli.evaluate on purpose: it is a measurement for a
proposed change, not an API.
"""
import numpy as np, torch, sys
from fractions import Fraction
from rssr_cli.patches import load_cache
from rssr_cli.degrade import upsample, project_consistent, _operator, _apply
from rssr_cli.evaluate import score, _model_sr
from rssr_cli.weights import load_weights
c=load_cache(sys.argv[2]); lr,hr,v=c.batch(np.arange(len(c)))
lr,hr,v=map(torch.from_numpy,(lr,hr,v))
S=c.scale
L=load_weights(sys.argv[1])
sr=torch.cat([_model_sr('lr_start',L,lr[i:i+8],np.arange(i,min(len(c),i+8)),{'lr_start_steps':1,'start':1.0},0) for i in range(0,len(c),8)])
def soft(sr, lr, lam):
    h=sr.shape[-1]; d=_operator(h,S)
    pinv = d.T @ np.linalg.inv(d@d.T + lam*np.eye(d.shape[0]))
    res = lr.double() - _apply(sr.double(), d, d)
    return (sr.double() + _apply(res, pinv, pinv)).float()
bic=upsample(lr,S)
for name,x in [('bicubic',bic),('model raw',sr),('model proj',project_consistent(sr,lr,S))]+[(f'model soft {lam}',soft(sr,lr,lam)) for lam in (0.01,0.03,0.1,0.3)]:
    s=score(x,lr,hr,v,S); print(name, {k: round(float(s[k].mean()),5) for k in ('psnr','ssim','hf_ratio','consistency_l1')})
