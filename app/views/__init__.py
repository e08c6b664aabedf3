"""The views: pure functions from the store (or a live result) to blocks (`workbench.app.blocks`)."""
