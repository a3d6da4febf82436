"""Ground-floor infrastructure shared by every part of vtl: storage (local paths and object-store URLs), the
writable-destination preflight, CLI usage errors, and the local Ray lifecycle with its watchdog. Nothing here knows
a data contract; `manifests/` aside, everything may import it, and it imports nothing of ours."""
