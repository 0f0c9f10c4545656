"""Numba CUDA kernels (the "cuda" implementation).

Device arrays are CuPy arrays (Numba reads them through __cuda_array_interface__, no copy); outputs are
allocated with CuPy.  Under NUMBA_ENABLE_CUDASIM=1 the simulator runs the same kernels on NumPy arrays
(each CUDA thread becomes a Python thread: use tiny sizes), which is how CI tests them without a GPU.

Importing this package imports numba.cuda: do it only after deciding on the simulator (dispatch.py
imports it lazily, on first use of the "cuda" implementation).
"""
from .bitpack import pack_bins_cuda, pack_bits_cuda, unpack_bins_cuda, unpack_bits_cuda
from .conv import conv2d_forward_cuda, conv2d_grad_input_cuda, conv2d_grad_weight_cuda
from .fewbit import fewbit_backward_cuda, fewbit_forward_cuda
from .gemm import matmul_cuda
from .pointwise import act_cuda, masked_grad_cuda, relu_mask_forward_cuda
from .pool import (avg_pool2d_backward_cuda, avg_pool2d_forward_cuda, max_pool2d_backward_cuda,
                   max_pool2d_forward_cuda, max_pool2d_gather_cuda)
