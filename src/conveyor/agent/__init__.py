"""The Conveyor agent: keeps one cluster equal to its GitOps branches and reports back to the forge."""
