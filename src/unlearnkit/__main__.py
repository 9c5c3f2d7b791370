"""``python -m unlearnkit`` = the ``unlearnkit`` command (launchers: ``torchrun -m unlearnkit run ...``,
``accelerate launch -m unlearnkit run ...``)."""

from unlearnkit.cli import main

main()
