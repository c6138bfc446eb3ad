"""The experiment pipeline: plan (profile -> jobs), summary, dvc.yaml."""
