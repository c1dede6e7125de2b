"""docs/'s generated parts, from outputs saved beside the pages (``make docs``; docsgen.pages)."""
