"""The Dash dashboard (installed as `workbench.app`)."""
