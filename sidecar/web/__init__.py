"""HTTP routes grouped by page; each page has a JSON twin under /api/v1/."""
