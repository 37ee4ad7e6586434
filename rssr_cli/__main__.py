"""``python -m rssr_cli``: the same CLI, for ``torchrun --nproc-per-node N -m rssr_cli train ...``."""

from rssr_cli.cli import main

if __name__ == "__main__":
    main(prog_name="rssr")
