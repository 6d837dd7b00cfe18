"""``python -m trellis_impl`` and the ``trellis-3d`` command."""
import os


def main() -> None:
    # OpenMP worker threads spin while waiting by default; on a shared or loaded CPU the spinning
    # threads take the cores from the work (measured: a run 2.7x slower under load than with
    # passive waiting, and no slower idle; docs/cpu_threads.md). Set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .cli import main as cli_main
    cli_main()


if __name__ == "__main__":
    main()
