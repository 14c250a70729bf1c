"""Run the tiny test models single-threaded: on a shared 2-core machine extra threads only contend."""
import torch

torch.set_num_threads(1)
