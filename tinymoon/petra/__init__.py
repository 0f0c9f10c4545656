"""tinymoon.petra — decoupled parallel training of reversible stages (Rivaud et al., PETRA, ICLR 2025).

    from tinymoon.petra import split, Schedule, Simulator, Recipe, MicroBatches
    stages = split(model, 4, recipe=Recipe(lr=0.1, k=2))          # RevBlock pieces store nothing
    Simulator(stages, Schedule(4, microbatches), batches).run()    # or MPIExecutor under mpiexec

`python -m tinymoon.petra train ...` runs it from the command line (the MPI executor under mpiexec);
docs/petra.md has the schedule, the memory table and the measurements.
"""
from .baselines import delayed_gradients, evaluate, pipelined_backprop, train_backprop
from .batches import MicroBatches
from .mpi import MPIExecutor, PeerFailed, PeerTimeout
from .recipe import Recipe
from .schedule import Schedule
from .simulator import Simulator
from .stages import BufferedStage, HeadStage, PetraError, ReversibleStage, Stage, TapeStage, split

__all__ = ["split", "Stage", "ReversibleStage", "BufferedStage", "HeadStage", "TapeStage", "PetraError", "Schedule",
           "Simulator", "MPIExecutor", "PeerFailed", "PeerTimeout", "Recipe", "MicroBatches", "train_backprop",
           "delayed_gradients", "pipelined_backprop", "evaluate"]
