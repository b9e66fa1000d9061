"""Figures and self-contained HTML pages for the audit, evaluation and stress commands."""
