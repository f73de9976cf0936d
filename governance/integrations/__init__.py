"""Bridges into other tools' extension points (MLflow's model evaluator)."""
