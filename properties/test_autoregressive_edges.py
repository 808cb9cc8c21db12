"""Edge cases and bad inputs of impl/autoregressive.py, found by mutation testing.

Each test here kills mutants that survived ``python -m spec.mutation impl/autoregressive.py``: an
input check that names the wrong argument (every message is matched from its start) or lets a
boundary value through, and results changed on valid input. Expected values come from the
definitions (a distribution sums to one over all 2^D binary vectors, the chain rule taken term by
term in a loop, the autoregressive property read off autograd Jacobians).
"""

import itertools
import math

import pytest
import torch

from impl import autoregressive as ar

F64 = torch.float64


def _raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)


def _randomise(module, seed, scale=0.7):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _bern(logit, v):
    return -math.log1p(math.exp(-logit)) if v == 1 else -math.log1p(math.exp(logit))


# ---- helpers -----------------------------------------------------------------------------------

def test_all_binary():
    _raises(ValueError, r"^n: must be >= 1", ar.all_binary, 0)
    _raises(ValueError, r"^n: must be <= 24", ar.all_binary, 25)
    _raises(TypeError, r"^n: expected an int", ar.all_binary, 2.0)
    for n in (1, 3):
        ref = torch.tensor(list(itertools.product([0, 1], repeat=n)), dtype=F64)
        out = ar.all_binary(n)
        assert out.dtype == F64
        torch.testing.assert_close(out, ref)
    assert ar.all_binary(2, dtype=torch.float32).dtype == torch.float32


def test_bernoulli_log_prob():
    logits = torch.tensor([[0.3, -2.0, 40.0], [-40.0, 0.0, 1.5]], dtype=F64)
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=F64)
    ref = torch.tensor([sum(_bern(l, v) for l, v in zip(lr.tolist(), xr.tolist())) for lr, xr in zip(logits, x)],
                       dtype=F64)
    torch.testing.assert_close(ar.bernoulli_log_prob(logits, x), ref)
    _raises(TypeError, r"^logits: expected a torch.Tensor", ar.bernoulli_log_prob, logits.tolist(), x)
    _raises(TypeError, r"^x: expected a torch.Tensor", ar.bernoulli_log_prob, logits, x.tolist())
    _raises(ValueError, r"^x: expected shape \(2, 3\)", ar.bernoulli_log_prob, logits, x[:1])
    _raises(TypeError, r"^x: dtype torch.float32 differs from logits's", ar.bernoulli_log_prob, logits, x.float())
    _raises(ValueError, r"^x: entries must be 0 or 1", ar.bernoulli_log_prob, logits, 2 * x)
    _raises(ValueError, r"^x: entries must be 0 or 1", ar.bernoulli_log_prob, logits, 0.5 * x)
    # validate=False skips the check: the formula is then applied as is
    out = ar.bernoulli_log_prob(logits, 0.5 * torch.ones_like(x), validate=False)
    assert torch.isfinite(out).all()


# ---- tabular, FVSBN ----------------------------------------------------------------------------

def _sums_to_one(log_prob, D):
    xs = ar.all_binary(D)
    torch.testing.assert_close(torch.logsumexp(log_prob(xs), 0), torch.tensor(0.0, dtype=F64), atol=1e-10, rtol=0)


def test_tabular_ar():
    _raises(ValueError, r"^n: must be >= 1", ar.TabularAR, 0)
    _raises(ValueError, r"^n: must be <= 20", ar.TabularAR, 21)
    m = _randomise(ar.TabularAR(3), 1).double()
    assert [p.numel() for p in m.logits] == [1, 2, 4]
    xs = ar.all_binary(3)
    lg = m.conditional_logits(xs)
    for r, x in enumerate(xs.long().tolist()):
        for i in range(3):
            idx = int("".join(map(str, x[:i])) or "0", 2)  # x_<i read as a binary number, first bit first
            assert lg[r, i] == m.logits[i][idx]
    _sums_to_one(m.log_prob, 3)
    ref = torch.tensor([sum(_bern(lg[r, i].item(), int(xs[r, i])) for i in range(3)) for r in range(8)], dtype=F64)
    torch.testing.assert_close(m.log_prob(xs), ref)
    _raises(ValueError, r"^x: expected shape \(\*, 3\)", m.log_prob, xs[:, :2])
    _raises(ValueError, r"^x: entries must be 0 or 1", m.log_prob, 2 * xs)


def test_fvsbn():
    _raises(ValueError, r"^n: must be >= 1", ar.FVSBN, 0)
    m = _randomise(ar.FVSBN(4), 2).double()
    assert m.alpha.numel() == 6 and m.alpha0.numel() == 4
    W = m.weight()
    assert bool((torch.triu(W) == 0).all())
    assert sorted(W[torch.tril(torch.ones(4, 4), -1).bool()].tolist()) == sorted(m.alpha.tolist())
    xs = ar.all_binary(4)
    lg = m.conditional_logits(xs)
    for r in range(16):
        for i in range(4):
            ref = m.alpha0[i] + sum(W[i, j] * xs[r, j] for j in range(i))
            torch.testing.assert_close(lg[r, i], ref)
    _sums_to_one(m.log_prob, 4)
    _raises(ValueError, r"^x: expected shape \(\*, 4\)", m.log_prob, xs[:, :3])
    ar.FVSBN(1).double().log_prob(torch.zeros(2, 1, dtype=F64))


# ---- NADE --------------------------------------------------------------------------------------

def test_nade_checks():
    _raises(ValueError, r"^D: must be >= 1", ar.NADE, 0, 2)
    _raises(ValueError, r"^H: must be >= 1", ar.NADE, 2, 0)
    _raises(TypeError, r"^order: expected a torch.Tensor", ar.NADE, 3, 2, [0, 1, 2])
    _raises(ValueError, r"^order: expected shape \(3\)", ar.NADE, 3, 2, torch.tensor([0, 1]))
    _raises(ValueError, r"^order: expected shape \(3\)", ar.NADE, 3, 2, torch.tensor([[0, 1, 2]]))
    _raises(ValueError, r"^order: expected a permutation of 0..2", ar.NADE, 3, 2, torch.tensor([0, 1, 1]))
    m = ar.NADE(3, 2).double()
    x = torch.zeros(2, 3, dtype=F64)
    _raises(ValueError, r"^method: expected one of", m.log_prob, x, "fast")
    _raises(ValueError, r"^x: expected shape \(\*, 3\)", m.hidden, x[:, :2])
    _raises(ValueError, r"^x: entries must be 0 or 1", m.hidden, x + 0.5)
    _raises(ValueError, r"^n: must be >= 1", m.sample, 0)
    _raises(TypeError, r"^generator: expected a torch.Generator", m.sample, 2, generator=1)


@pytest.mark.parametrize("order", [None, [2, 0, 3, 1]])
def test_nade_against_the_definition(order):
    o = None if order is None else torch.tensor(order)
    m = _randomise(ar.NADE(4, 3, o), 3).double()
    oo = list(range(4)) if order is None else order
    xs = ar.all_binary(4)
    ref_lg = torch.empty(16, 4, dtype=F64)
    for r in range(16):
        for k, d in enumerate(oo):
            a = m.b + sum(m.W[:, oo[j]] * xs[r, oo[j]] for j in range(k)) if k else m.b
            ref_lg[r, d] = m.c[d] + m.V[d] @ torch.sigmoid(a)
    for method in ("cumsum", "incremental", "naive"):
        torch.testing.assert_close(m.conditional_logits(xs, method), ref_lg)
    torch.testing.assert_close(m.conditional_logits(xs), ref_lg)
    _sums_to_one(m.log_prob, 4)
    for method in ("incremental", "naive"):
        torch.testing.assert_close(m.log_prob(xs, method), m.log_prob(xs))


def test_nade_sample_is_exact():
    # a NADE whose conditionals do not depend on the past: each bit is Bernoulli(sigmoid(c_d))
    m = ar.NADE(3, 2, torch.tensor([2, 0, 1])).double()
    with torch.no_grad():
        m.V.zero_()
        m.c.copy_(torch.tensor([-50.0, 50.0, -50.0]))
    s = m.sample(5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, 3) and s.dtype == F64
    torch.testing.assert_close(s, torch.tensor([[0.0, 1.0, 0.0]] * 5, dtype=F64))
    # the dependence on the past: x_1 copies x_0 through a large hidden weight
    m = ar.NADE(2, 1).double()
    with torch.no_grad():
        m.W.copy_(torch.tensor([[100.0, 0.0]]))
        m.b.fill_(-50.0)
        m.V.copy_(torch.tensor([[0.0], [200.0]]))
        m.c.copy_(torch.tensor([0.0, -100.0]))
    s = m.sample(200, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(s[:, 1], s[:, 0])
    assert 0 < s[:, 0].sum() < 200


# ---- RNADE -------------------------------------------------------------------------------------

def test_rnade():
    _raises(ValueError, r"^D: must be >= 1", ar.RNADE, 0, 2)
    _raises(ValueError, r"^H: must be >= 1", ar.RNADE, 2, 0)
    _raises(ValueError, r"^K: must be >= 1", ar.RNADE, 2, 2, 0)
    m = _randomise(ar.RNADE(3, 2, 2), 4, 0.5).double()
    assert m.K == 2
    assert ar.RNADE(3, 2).K == 2
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    _raises(ValueError, r"^x: expected shape \(\*, 3\)", m.log_prob, x[:, :2])
    ref = torch.empty(4, 3, dtype=F64)
    for r in range(4):
        for i in range(3):
            h = torch.sigmoid(m.b + sum(m.W[:, j] * x[r, j] for j in range(i))) if i else torch.sigmoid(m.b)
            lp, mu, ls = (m.V[q, i] @ h + m.c[q, i] for q in range(3))
            pi = torch.softmax(lp, 0)
            ref[r, i] = torch.log(sum(pi[k] * torch.exp(-0.5 * ((x[r, i] - mu[k]) / ls[k].exp()) ** 2)
                                      / (ls[k].exp() * math.sqrt(2 * math.pi)) for k in range(2)))
    torch.testing.assert_close(m.conditional_log_prob(x), ref)
    torch.testing.assert_close(m.log_prob(x), ref.sum(-1))
    _raises(ValueError, r"^n: must be >= 1", m.sample, 0)
    _raises(TypeError, r"^generator: expected a torch.Generator", m.sample, 1, generator=1)
    # one component with a tiny spread: samples are the means, fed back step by step
    one = _randomise(ar.RNADE(2, 2, 1), 6, 0.5).double()
    with torch.no_grad():
        one.c[2].fill_(-30.0)
        one.V[2].zero_()
    s = one.sample(3, generator=torch.Generator().manual_seed(7))
    assert s.shape == (3, 2) and s.dtype == F64
    _, mu, _ = one.mixture(s)
    torch.testing.assert_close(s, mu[..., 0], atol=1e-9, rtol=0)


# ---- order-agnostic NADE -----------------------------------------------------------------------

def test_orderless_nade():
    _raises(ValueError, r"^D: must be >= 1", ar.OrderlessNADE, 0, 2)
    _raises(ValueError, r"^H: must be >= 1", ar.OrderlessNADE, 2, 0)
    _raises(ValueError, r"^layers: must be >= 1", ar.OrderlessNADE, 2, 2, 0)
    assert sum(isinstance(q, torch.nn.Linear) for q in ar.OrderlessNADE(3, 4, 3).net) == 4
    assert sum(isinstance(q, torch.nn.Linear) for q in ar.OrderlessNADE(3, 4).net) == 3
    m = _randomise(ar.OrderlessNADE(3, 4), 8).double()
    xs = ar.all_binary(3)
    order = torch.tensor([1, 2, 0])
    # the chain rule term by term: step k observes order[:k] and predicts order[k]
    ref = torch.zeros(8, dtype=F64)
    for k in range(3):
        mask = torch.zeros(8, 3, dtype=F64)
        mask[:, order[:k]] = 1
        lg = m.conditional_logits(xs, mask)[:, order[k]]
        ref += torch.tensor([_bern(l, int(v)) for l, v in zip(lg.tolist(), xs[:, order[k]].tolist())], dtype=F64)
    torch.testing.assert_close(m.log_prob(xs, order), ref)
    _sums_to_one(lambda v: m.log_prob(v, order), 3)
    msk = torch.tensor([[1.0, 0.0, 0.0]] * 8, dtype=F64)
    lg = m.conditional_logits(xs, msk)
    nll = torch.tensor([-sum(_bern(lg[r, d].item(), int(xs[r, d])) for d in (1, 2)) for r in range(8)], dtype=F64)
    torch.testing.assert_close(m.orderless_loss(xs, msk), 3 / 2 * nll)  # D / (D - |m|) = 3 / 2
    none = torch.zeros_like(xs)  # nothing observed: D / D times the sum over all D variables
    lg0 = m.conditional_logits(xs, none)
    nll0 = torch.tensor([-sum(_bern(lg0[r, d].item(), int(xs[r, d])) for d in range(3)) for r in range(8)], dtype=F64)
    torch.testing.assert_close(m.orderless_loss(xs, none), nll0)
    _raises(ValueError, r"^m: at least one variable per example must be unobserved", m.orderless_loss, xs,
            torch.ones_like(xs))
    _raises(ValueError, r"^m: expected shape \(8, 3\)", m.conditional_logits, xs, msk[:2])
    _raises(TypeError, r"^m: dtype torch.float32 differs from x's", m.conditional_logits, xs, msk.float())
    _raises(ValueError, r"^m: entries must be 0 or 1", m.conditional_logits, xs, 0.5 * msk)
    _raises(ValueError, r"^order: expected a permutation", m.log_prob, xs, torch.tensor([0, 0, 1]))
    _raises(ValueError, r"^x: entries must be 0 or 1", m.log_prob, xs + 2, order)


# ---- MADE --------------------------------------------------------------------------------------

def test_made_masks():
    _raises(ValueError, r"^D: must be >= 2", ar.made_masks, 1, [3])
    _raises(TypeError, r"^hidden: expected a non-empty list of layer widths", ar.made_masks, 3, [])
    _raises(TypeError, r"^hidden: expected a non-empty list of layer widths", ar.made_masks, 3, 4)
    _raises(ValueError, r"^hidden: must be >= 1", ar.made_masks, 3, [4, 0])
    _raises(ValueError, r"^order: expected a permutation", ar.made_masks, 3, [4], torch.tensor([0, 2, 2]))
    masks = ar.made_masks(3, [4])
    # degrees: inputs 1, 2, 3; hidden 1, 2, 1, 2; keep hidden iff m(k) >= m(d); output iff m(d) > m(k)
    assert masks[0].tolist() == [[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0]]
    assert masks[1].tolist() == [[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]]
    mo = ar.made_masks(3, [2, 2], torch.tensor([2, 0, 1]))
    assert [tuple(q.shape) for q in mo] == [(2, 3), (2, 2), (3, 2)]
    conn = mo[2] @ mo[1] @ mo[0]  # paths from input to output: only earlier in the order
    rank = {2: 0, 0: 1, 1: 2}
    for d in range(3):
        for j in range(3):
            assert (conn[d, j] > 0) <= (rank[j] < rank[d])


@pytest.mark.parametrize("order", [None, [1, 2, 0]])
def test_made_is_autoregressive_and_normalised(order):
    o = None if order is None else torch.tensor(order)
    m = _randomise(ar.MADE(3, [5, 4], o), 9).double()
    oo = [0, 1, 2] if order is None else order
    x = torch.rand(1, 3, dtype=F64)
    J = torch.autograd.functional.jacobian(lambda v: m(v)[0], x)[:, 0]
    for d in range(3):
        for j in range(3):
            if oo.index(j) >= oo.index(d):
                assert J[d, j] == 0
    _sums_to_one(m.log_prob, 3)
    _raises(ValueError, r"^x: expected shape \(\*, 3\)", m, x[:, :2])
    _raises(ValueError, r"^x: entries must be 0 or 1", m.log_prob, x)
    _raises(ValueError, r"^n: must be >= 1", m.sample, 0)
    _raises(TypeError, r"^generator: expected a torch.Generator", m.sample, 1, generator=1)
    s = m.sample(4, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 3) and bool(((s == 0) | (s == 1)).all())


def test_masked_linear():
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    _raises(ValueError, r"^mask: expected shape \(3, 2\)", ar.MaskedLinear, 2, 3, mask.T)
    lin = ar.MaskedLinear(2, 3, mask).double()
    x = torch.randn(4, 2, dtype=F64)
    torch.testing.assert_close(lin(x), x @ (lin.weight * mask.double()).T + lin.bias)
    # the mask is applied in the weight's dtype, whatever the buffer's
    lin32 = ar.MaskedLinear(2, 3, mask)
    lin32.mask = mask.double()
    x32 = torch.randn(4, 2)
    out = lin32(x32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x32 @ (lin32.weight * mask).T + lin32.bias)


def test_orderless_nade_runs_in_its_own_dtype():
    # a float64 network fed float32 data: the input is cast to the network's dtype, the logits back
    m = _randomise(ar.OrderlessNADE(3, 4), 20).double()
    xs = ar.all_binary(3)
    msk = torch.tensor([[1.0, 0.0, 1.0]] * 8, dtype=F64)
    out = m.conditional_logits(xs.float(), msk.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, m.conditional_logits(xs, msk).float())


# ---- PixelCNN ----------------------------------------------------------------------------------

def test_pixelcnn_mask():
    m = ar.pixelcnn_mask(1, 1, (3, 3), "A")
    assert m[0, 0].tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert ar.pixelcnn_mask(1, 1, (3, 5), "B")[0, 0].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0]
                                                                   + [0, 0]]
    # colours R, G, B in contiguous groups of 2: centre tap, type A strictly earlier groups, B also its own
    a = ar.pixelcnn_mask(6, 3, (1, 1), "A", colors=3)[:, :, 0, 0]
    b = ar.pixelcnn_mask(6, 3, (1, 1), "B", colors=3)[:, :, 0, 0]
    assert a.tolist() == [[0] * 6, [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
    assert b.tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1] * 6]
    _raises(ValueError, r"^in_channels: must be >= 1", ar.pixelcnn_mask, 0, 1, (3, 3), "A")
    _raises(ValueError, r"^out_channels: must be >= 1", ar.pixelcnn_mask, 1, 0, (3, 3), "A")
    _raises(ValueError, r"^mask_type: expected one of \['A', 'B'\]", ar.pixelcnn_mask, 1, 1, (3, 3), "C")
    _raises(ValueError, r"^colors: must be >= 1", ar.pixelcnn_mask, 1, 1, (3, 3), "A", 0)
    _raises(ValueError, r"^colors: 3 must divide in_channels 2 and out_channels 3", ar.pixelcnn_mask, 2, 3, (3, 3),
            "A", 3)
    _raises(ValueError, r"^colors: 3 must divide in_channels 3 and out_channels 4", ar.pixelcnn_mask, 3, 4, (3, 3),
            "A", 3)
    _raises(ValueError, r"^kernel_size: must be odd", ar.pixelcnn_mask, 1, 1, (2, 3), "A")
    _raises(ValueError, r"^kernel_size: must be odd", ar.pixelcnn_mask, 1, 1, (3, 4), "A")


def _causal_jacobian(model, C, K, H, W, seed):
    """d logits / d one-hot input, at a random one-hot input: (C, K, H, W, C * K, H, W)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, K, (1, C, H, W), generator=g)
    h = ar._one_hot_levels(x, K, C).to(F64)
    return torch.autograd.functional.jacobian(lambda v: model.logits_from_onehot(v)[0], h)[..., 0, :, :, :]


@pytest.mark.parametrize("kind", ["pixelcnn", "pixelcnn-rgb", "gated", "rowlstm"])
def test_image_models_are_causal_and_normalised(kind):
    torch.manual_seed(0)
    C = 3 if kind == "pixelcnn-rgb" else 1
    K = 2
    model = {"pixelcnn": lambda: ar.PixelCNN(1, K, hidden=4, layers=2, first_kernel=3),
             "pixelcnn-rgb": lambda: ar.PixelCNN(3, K, hidden=6, layers=2, first_kernel=3),
             "gated": lambda: ar.GatedPixelCNN(K, hidden=3, layers=2),
             "rowlstm": lambda: ar.RowLSTM(K, hidden=3)}[kind]()
    model = _randomise(model, 10, 0.5).double()
    H, W = 3, 3
    J = _causal_jacobian(model, C, K, H, W, 11).abs()
    seen = J.sum(dim=1).reshape(C, H, W, C, K, H, W).sum(4)  # output (c, i, j) <- input (c', i', j')
    for c, i, j in itertools.product(range(C), range(H), range(W)):
        for c2, i2, j2 in itertools.product(range(C), range(H), range(W)):
            before = (i2, j2, c2) < (i, j, c)  # raster order, then colour
            if not before:
                assert seen[c, i, j, c2, i2, j2] == 0, (c, i, j, c2, i2, j2)
    if kind == "gated":  # no blind spot: the upper right of the causal context is seen
        assert seen[0, 2, 2, 0, 0, 2] > 0 and seen[0, 1, 0, 0, 0, 2] > 0
    if C == 1 and H * W <= 9:
        xs = torch.tensor(list(itertools.product(range(K), repeat=4))).reshape(-1, 1, 2, 2)
        lp = model.log_prob(xs)
        torch.testing.assert_close(torch.logsumexp(lp, 0), torch.tensor(0.0, dtype=F64), atol=1e-10, rtol=0)


def test_image_model_checks_and_sampling():
    _raises(ValueError, r"^channels: must be >= 1", ar.PixelCNN, 0)
    _raises(ValueError, r"^levels: must be >= 2", ar.PixelCNN, 1, 1)
    _raises(ValueError, r"^layers: must be >= 1", ar.PixelCNN, 1, 2, 4, 0)
    _raises(ValueError, r"^hidden: must be >= 3", ar.PixelCNN, 3, 2, 2)
    _raises(ValueError, r"^levels: must be >= 2", ar.GatedPixelCNN, 1)
    _raises(ValueError, r"^hidden: must be >= 1", ar.GatedPixelCNN, 2, 0)
    _raises(ValueError, r"^layers: must be >= 1", ar.GatedPixelCNN, 2, 2, 0)
    _raises(ValueError, r"^kernel: must be >= 3", ar.GatedPixelCNN, 2, 2, 1, 1)
    _raises(ValueError, r"^kernel: must be odd", ar.GatedPixelCNN, 2, 2, 1, 4)
    _raises(ValueError, r"^levels: must be >= 2", ar.RowLSTM, 1)
    _raises(ValueError, r"^hidden: must be >= 1", ar.RowLSTM, 2, 0)
    _raises(ValueError, r"^kernel: must be >= 3", ar.RowLSTM, 2, 2, 1)
    _raises(ValueError, r"^kernel: must be odd", ar.RowLSTM, 2, 2, 4)
    torch.manual_seed(0)
    m = ar.PixelCNN(1, 3, hidden=4, layers=1, first_kernel=3).double()
    x = torch.zeros(2, 1, 2, 2, dtype=torch.long)
    _raises(TypeError, r"^x: expected integer levels", m, x.double())
    _raises(ValueError, r"^x: levels must lie in 0..2", m, x + 3)
    _raises(ValueError, r"^x: levels must lie in 0..2", m, x - 1)
    _raises(ValueError, r"^x: expected shape \(\*, 1, \*, \*\)", m, torch.zeros(2, 2, 2, 2, dtype=torch.long))
    _raises(ValueError, r"^h: expected shape \(\*, 3, \*, \*\)", m.logits_from_onehot, torch.zeros(1, 2, 2, 2, dtype=F64))
    for bad, pat in [((0, 2, 2), r"^n: must be >= 1"), ((1, 0, 2), r"^height: must be >= 1"),
                     ((1, 2, 0), r"^width: must be >= 1")]:
        _raises(ValueError, pat, m.sample, *bad)
    _raises(TypeError, r"^generator: expected a torch.Generator", m.sample, 1, 2, 2, generator=1)
    s = m.sample(3, 2, 3, generator=torch.Generator().manual_seed(1))
    assert s.shape == (3, 1, 2, 3) and s.dtype == torch.long and bool(((s >= 0) & (s < 3)).all())
    # a model whose logits ignore the input and favour level 2 overwhelmingly samples all 2s
    with torch.no_grad():
        last = m.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-50.0, -50.0, 50.0], dtype=F64))
    assert bool((m.sample(2, 2, 2, generator=torch.Generator().manual_seed(2)) == 2).all())
    lp = m.log_prob(torch.full((1, 1, 2, 2), 2, dtype=torch.long))
    torch.testing.assert_close(lp, torch.zeros(1, dtype=F64), atol=1e-12, rtol=0)


# ---- WaveNet -----------------------------------------------------------------------------------

def test_wavenet_receptive_field_and_checks():
    assert ar.wavenet_receptive_field(2, [1, 2, 4, 8]) == 16
    assert ar.wavenet_receptive_field(3, [1, 1]) == 5
    assert ar.wavenet_receptive_field(1, [5]) == 1
    assert ar.wavenet_receptive_field(2, []) == 1
    _raises(ValueError, r"^kernel_size: must be >= 1", ar.wavenet_receptive_field, 0, [1])
    _raises(TypeError, r"^dilations: expected a list of ints", ar.wavenet_receptive_field, 2, 3)
    _raises(ValueError, r"^dilations: must be >= 1", ar.wavenet_receptive_field, 2, [1, 0])
    _raises(ValueError, r"^levels: must be >= 2", ar.WaveNet, 1)
    _raises(ValueError, r"^residual: must be >= 1", ar.WaveNet, 2, 0)
    _raises(ValueError, r"^kernel: must be >= 2", ar.WaveNet, 2, 2, [1], 1)
    _raises(ValueError, r"^dilations: must be >= 1", ar.WaveNet, 2, 2, [0])
    assert ar.WaveNet(2, 2, [1, 2], 3).receptive_field == 1 + 2 * 4
    assert ar.WaveNet().receptive_field == 17  # kernel 2, dilations 1 (the first causal layer), 1, 2, 4, 8


def test_causal_conv():
    c = ar.CausalConv1d(1, 1, 3, dilation=2).double()
    with torch.no_grad():
        c.weight.copy_(torch.tensor([[[1.0, 10.0, 100.0]]]))
        c.bias.zero_()
    x = torch.arange(1.0, 8.0, dtype=F64).reshape(1, 1, 7)
    ref = [sum(w * (x[0, 0, t - s].item() if t - s >= 0 else 0.0) for w, s in [(1, 4), (10, 2), (100, 0)])
           for t in range(7)]
    torch.testing.assert_close(c(x)[0, 0], torch.tensor(ref, dtype=F64))


def test_wavenet_is_causal_with_its_receptive_field():
    torch.manual_seed(0)
    m = _randomise(ar.WaveNet(3, 3, [1, 2], 2), 12, 0.5).double()
    T = 9
    x = torch.randint(0, 3, (1, T), generator=torch.Generator().manual_seed(13))
    h = torch.nn.functional.one_hot(x, 3).transpose(1, 2).to(F64)
    J = torch.autograd.functional.jacobian(lambda v: m.logits_from_onehot(v)[0], h)[:, :, 0].abs().sum((0, 2))
    rf = m.receptive_field  # 1 + 1 * (1 + 1 + 2) = 5: output t sees t - 5 .. t - 1
    for t in range(T):
        for s in range(T):
            assert (J[t, s] > 0) == (t - rf <= s < t), (t, s)
    xs = torch.tensor(list(itertools.product(range(3), repeat=3)))
    torch.testing.assert_close(torch.logsumexp(m.log_prob(xs), 0), torch.tensor(0.0, dtype=F64), atol=1e-10, rtol=0)
    _raises(ValueError, r"^x: expected 2 dimensions", m, x[0])
    _raises(TypeError, r"^x: expected integer levels", m, x.double())
    _raises(ValueError, r"^x: levels must lie in 0..2", m, x + 3)
    _raises(ValueError, r"^h: expected shape \(\*, 3, \*\)", m.logits_from_onehot, h[:, :2])
    _raises(ValueError, r"^n: must be >= 1", m.sample, 0, 3)
    _raises(ValueError, r"^length: must be >= 1", m.sample, 1, 0)
    _raises(TypeError, r"^generator: expected a torch.Generator", m.sample, 1, 3, generator=1)
    s = m.sample(2, 5, generator=torch.Generator().manual_seed(14))
    assert s.shape == (2, 5) and s.dtype == torch.long


# ---- degenerate inputs (sweep) -----------------------------------------------------------------

XB = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64)


def test_all_binary_dtype_and_device_checked():
    """A string dtype was taken for a device by Tensor.to (RuntimeError), a bad device a RuntimeError."""
    _raises(TypeError, r"^dtype: expected a torch.dtype", ar.all_binary, 2, dtype="float")
    _raises(ValueError, r"^device: not a torch device", ar.all_binary, 2, device="nope")


@pytest.mark.parametrize("make", [lambda: ar.TabularAR(3), lambda: ar.FVSBN(3), lambda: ar.NADE(3, 4),
                                  lambda: ar.MADE(3, [4]), lambda: ar.OrderlessNADE(3, 4)])
def test_binary_models_check_the_device_before_reading_x(make):
    """x on another device was read for the 0/1 check first (meta: a RuntimeError of .item()), and with real
    devices failed inside a layer; now the device is named before any value is read."""
    m = make().double()
    args = (torch.tensor([2, 0, 1]),) if isinstance(m, ar.OrderlessNADE) else ()
    _raises(ValueError, r"^x: on meta, but the model is on cpu", m.log_prob, XB.to("meta"), *args)


def test_rnade_and_made_check_x_against_the_model():
    """RNADE with x on another device and MADE with x in another dtype were RuntimeErrors inside a layer."""
    _raises(ValueError, r"^x: on meta", ar.RNADE(3, 4).double().log_prob, torch.randn(2, 3, dtype=F64, device="meta"))
    made = ar.MADE(3, [4]).double()
    _raises(TypeError, r"^x: dtype torch.float32 differs from the model's", made, XB.float())
    _raises(TypeError, r"^x: dtype torch.float32", made.log_prob, XB.float())


def test_order_must_be_an_integer_permutation():
    """A float 'permutation' passed the check (sorted it compares equal to arange), then could not index."""
    _raises(TypeError, r"^order: expected an integer tensor", ar.NADE, 3, 4, torch.tensor([0.0, 1.0, 2.0]))
    _raises(TypeError, r"^order: expected an integer tensor", ar.MADE, 3, [4], torch.tensor([2.0, 0.0, 1.0]))
    _raises(TypeError, r"^order: expected an integer tensor", ar.OrderlessNADE(3, 4).double().log_prob, XB,
            torch.tensor([0.0, 1.0, 2.0]))


def test_masked_linear_checks_mask_values_sizes_and_inputs():
    """A mask of 0.5 or NaN was accepted (no 0/1 mask); in_features -1 was torch's RuntimeError; x of the
    wrong width, dtype or device a RuntimeError of F.linear, a list linear()'s unnamed TypeError."""
    _raises(ValueError, r"^mask: entries must be 0 or 1", ar.MaskedLinear, 3, 2, torch.full((2, 3), 0.5))
    _raises(ValueError, r"^mask: entries must be 0 or 1", ar.MaskedLinear, 3, 2, torch.full((2, 3), math.nan))
    _raises(ValueError, r"^in_features: must be >= 1", ar.MaskedLinear, -1, 2, torch.ones(2, 0))
    lin = ar.MaskedLinear(3, 2, torch.ones(2, 3))
    _raises(ValueError, r"^x: expected shape \(\.\.\., 3\)", lin, torch.ones(2, 4))
    _raises(TypeError, r"^x: dtype torch.float64 differs from weight's", lin, torch.ones(2, 3, dtype=F64))
    _raises(ValueError, r"^x: on meta", lin, torch.ones(2, 3, device="meta"))
    _raises(TypeError, r"^x: expected a torch.Tensor", lin, [[1.0, 1.0, 1.0]])


def test_kernel_sizes_are_checked_by_name():
    """An int, a 1- or 3-tuple, a float or a string kernel_size gave unnamed unpacking / torch errors, a
    negative one a RuntimeError of torch.zeros."""
    for bad in (3, (3,), (3, 3, 3), "33"):
        _raises(TypeError, r"^kernel_size: expected \(height, width\)", ar.pixelcnn_mask, 1, 2, bad, "A")
    _raises(TypeError, r"^kernel_size: expected an int", ar.pixelcnn_mask, 1, 2, (3.0, 3.0), "A")
    _raises(ValueError, r"^kernel_size: must be >= 1", ar.pixelcnn_mask, 1, 2, (-1, -1), "A")
    _raises(TypeError, r"^kernel_size: expected an int", ar.MaskedConv2d, 1, 2, 3.0, "A")
    _raises(TypeError, r"^kernel_size: expected an int", ar.MaskedConv2d, 1, 2, "3", "A")
    _raises(ValueError, r"^kernel_size: must be >= 1", ar.PixelCNN, kernel=-1)
    conv = ar.MaskedConv2d(1, 2, 3, "A")
    _raises(TypeError, r"^x: dtype torch.float64 differs from weight's", conv, torch.zeros(1, 1, 3, 3, dtype=F64))
    _raises(ValueError, r"^x: on meta", conv, torch.zeros(1, 1, 3, 3, device="meta"))
    _raises(ValueError, r"^x: expected 1 channels", conv, torch.zeros(1, 2, 3, 3))


@pytest.mark.parametrize("make", [lambda: ar.PixelCNN(1, 3, hidden=4, layers=2), lambda: ar.GatedPixelCNN(3, 4, 2),
                                  lambda: ar.RowLSTM(3, 4)])
def test_image_models_refuse_empty_images_and_foreign_inputs(make):
    """H = 0 or W = 0 was a RuntimeError of the first convolution; x on another device was read for the range
    check first (meta: .item()'s RuntimeError); a float32 one-hot into a float64 model a RuntimeError."""
    model = make().double()
    x = torch.randint(0, 3, (2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    _raises(ValueError, r"^x: expected at least one pixel", model.log_prob, x[:, :, :0])
    _raises(ValueError, r"^x: expected at least one pixel", model.log_prob, x[:, :, :, :0])
    _raises(ValueError, r"^x: on meta, but the model is on cpu", model.log_prob, x.to("meta"))
    h = torch.zeros(2, 3, 4, 4)
    _raises(TypeError, r"^h: dtype torch.float32 differs from the model's", model.logits_from_onehot, h)
    _raises(ValueError, r"^h: expected at least one pixel", model.logits_from_onehot, h[:, :, :0].double())
    assert model.log_prob(x[:0]).shape == (0,)  # an empty batch stays fine


def test_causal_conv_and_wavenet_degenerate_sizes():
    """kernel_size 0 and dilation 0 or -1 built silently (a negative dilation makes the left pad crop); zero
    time steps were a RuntimeError of the convolution; empty dilations built a WaveNet whose forward failed
    in tanh(0); a tensor of dilations failed inside Conv1d."""
    _raises(ValueError, r"^kernel_size: must be >= 1", ar.CausalConv1d, 1, 2, 0)
    _raises(ValueError, r"^dilation: must be >= 1", ar.CausalConv1d, 1, 2, 2, 0)
    _raises(ValueError, r"^dilation: must be >= 1", ar.CausalConv1d, 1, 2, 2, -1)
    c = ar.CausalConv1d(1, 2, 2, 2)
    _raises(ValueError, r"^x: expected at least one time step", c, torch.zeros(1, 1, 0))
    _raises(TypeError, r"^x: dtype torch.float64 differs from weight's", c, torch.zeros(1, 1, 5, dtype=F64))
    _raises(ValueError, r"^x: expected 1 channels", c, torch.zeros(1, 2, 5))
    _raises(ValueError, r"^dilations: expected at least one", ar.WaveNet, 3, 4, [])
    _raises(TypeError, r"^dilations: expected a list of ints", ar.WaveNet, 3, 4, torch.tensor([1]))
    wn = ar.WaveNet(levels=3, residual=4, dilations=[1, 2]).double()
    x = torch.randint(0, 3, (2, 6), generator=torch.Generator().manual_seed(1))
    _raises(ValueError, r"^x: expected at least one time step", wn.log_prob, x[:, :0])
    _raises(ValueError, r"^h: expected at least one time step", wn.logits_from_onehot, torch.zeros(2, 3, 0, dtype=F64))
    _raises(ValueError, r"^x: on meta, but the model is on cpu", wn.log_prob, x.to("meta"))
    _raises(TypeError, r"^h: dtype torch.float32", wn.logits_from_onehot, torch.zeros(2, 3, 6))
    assert wn.log_prob(x[:0]).shape == (0,)
