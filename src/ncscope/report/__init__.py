"""Reports: one self-contained HTML page with an index of every claim and a section per study."""

from ncscope.report.build import build_report

__all__ = ["build_report"]
