import numpy as np
import pytest
from helpers import namespace_or_skip

from handgrad.core import arrays as backend

torch = pytest.importorskip("torch")


def test_namespace_of_numpy_torch_and_mixtures():
    assert backend.namespace(np.ones(2)) is backend.get_namespace("numpy")
    assert backend.namespace(torch.ones(2)) is backend.get_namespace("torch")
    with pytest.raises(TypeError, match=r"one array library, got numpy.ndarray, torch.Tensor"):
        backend.namespace(np.ones(2), torch.ones(2))


def test_get_namespace_names_the_choices():
    with pytest.raises(
        ValueError, match="backend must be one of numpy, torch, array_api_strict, got 'cupy'"
    ):
        backend.get_namespace("cupy")
    xp = backend.get_namespace("torch")
    assert backend.get_namespace(xp) is xp


@pytest.mark.parametrize("source", ["numpy", "torch", "array_api_strict"])
@pytest.mark.parametrize("target", ["numpy", "torch", "array_api_strict"])
def test_convert_between_any_two_libraries(source, target):
    xs, xt = namespace_or_skip(source), namespace_or_skip(target)
    a = backend.convert(np.arange(6.0).reshape(2, 3), xs)
    b = backend.convert(a, xt, dtype="float32")
    assert backend.namespace(b) is xt and b.dtype == xt.float32
    np.testing.assert_array_equal(backend.to_numpy(b), np.arange(6.0).reshape(2, 3))
    assert backend.float_dtype_name(b) == "float32"
    assert backend.is_floating(b)


def test_convert_copies_and_to_numpy_detaches():
    a = np.ones(3)
    b = backend.convert(a, "numpy")
    b[0] = 5
    assert a[0] == 1
    t = torch.ones(2, requires_grad=True)
    np.testing.assert_array_equal(backend.to_numpy(t), [1.0, 1.0])
    with pytest.raises(
        TypeError, match="expected a float64, float32 or float16 array, got dtype int64"
    ):
        backend.float_dtype_name(np.ones(2, dtype=np.int64))


def test_numpys_fast_route_gives_numpys_results():
    xp = backend.namespace(np.ones(1))
    assert xp is backend.get_namespace("numpy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5))
    for axis in (None, 0, -1, (0, 1)):
        for keepdims in (False, True):
            np.testing.assert_array_equal(
                xp.sum(x, axis=axis, keepdims=keepdims), np.sum(x, axis=axis, keepdims=keepdims)
            )
            np.testing.assert_array_equal(
                xp.max(x, axis=axis, keepdims=keepdims), np.max(x, axis=axis, keepdims=keepdims)
            )
    assert xp.sum(np.array([1, 2, 3]), dtype=np.float64) == 6.0
    np.testing.assert_array_equal(xp.take(x, np.array([2, 0]), axis=0), x[[2, 0]])
    assert xp.count_nonzero(x > 0) == np.count_nonzero(x > 0)
    assert xp.exp is np.exp and "fast route" in repr(xp)
