"""Super-resolution models; importing this package registers them."""

from __future__ import annotations

from tasks.sr.models.edsr import EDSR, edsr, edsr_paper
from tasks.sr.models.srresnet import SRResNet, srresnet

__all__ = ["EDSR", "SRResNet", "edsr", "edsr_paper", "srresnet"]
