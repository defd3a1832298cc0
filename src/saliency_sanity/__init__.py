"""saliency-sanity: sanity checks for saliency maps (Adebayo et al. 2018 and follow-ups)."""

from __future__ import annotations

__version__ = "0.1.0"
