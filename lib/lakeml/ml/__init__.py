"""Model lifecycle: splits, evaluation, MLflow tracking and registry, promotion, batch scoring, reports."""
