"""`vtl-pipeline download`: a manifest's media fetched (yt-dlp or plain URLs), cut to their windows, written with a
new manifest that points at them. See pipeline/download/run.py for the run folder and docs/download.md for use."""
