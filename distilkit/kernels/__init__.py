"""Native CPU kernels built at run time, each with a pure PyTorch fallback that gives the same result.

`prefix_attention` / `qkv_prefix_attention` (attention over cached prefix keys plus new keys, for
template-cached trackers) run their native kernel once `load_native()` has built and loaded it;
`native_status()` says whether it did and why not, `use_native(False)` switches the kernels off for a
block of code.
"""

from distilkit.kernels.native import load_native, native_loaded, native_status, use_native
from distilkit.kernels.prefix_attention import prefix_attention, qkv_prefix_attention

__all__ = ["load_native", "native_loaded", "native_status", "prefix_attention", "qkv_prefix_attention", "use_native"]
