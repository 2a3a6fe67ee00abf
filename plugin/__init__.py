"""The Docker volume plugin that runs in every Docker host (standard library only)."""
