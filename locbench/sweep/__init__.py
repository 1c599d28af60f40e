"""Sweeps: grids as data, a resumable runner, local and SLURM executors."""
