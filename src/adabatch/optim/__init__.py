"""Optimisers with adaptive step sizes, as the adaptive-batch-size papers pair them.

* AdaGrad (Duchi, Hazan & Singer 2011): use :class:`torch.optim.Adagrad`; it is not
  reimplemented here.
* AdaGrad-Norm (Ward, Wu & Bottou 2019), the step size of AdAdaGrad-Norm (Lau, Liu & Kolar,
  arXiv 2402.11215) and AdaBatchGrad (arXiv 2402.05264): :class:`AdaGradNorm`, with
  ``mode="global"`` (one scalar per parameter group, the theory) or ``mode="rowwise"`` (one
  accumulator per output row, the AdAdaGrad authors' code); its functional core is
  :func:`adagrad_norm_step`.
"""

from .adagrad_norm import NORM_MODES, AdaGradNorm, adagrad_norm_step

__all__ = ["NORM_MODES", "AdaGradNorm", "adagrad_norm_step"]
