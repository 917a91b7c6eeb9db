"""Reports: claims judged from a run's tables, figures (PNG + SVG), a self-contained HTML page."""

from ncscope.report.claims import Claim, judge_claims

__all__ = ["Claim", "judge_claims"]
