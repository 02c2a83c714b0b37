"""The campaign report (``build.build_report``): one self-contained HTML page."""
