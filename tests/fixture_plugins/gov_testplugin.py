"""A third-party-style plugin used by the tests: a real occlusion-sensitivity method, plus a method that
crashes, discovered through a real entry point (see the .dist-info folder beside this file)."""

from __future__ import annotations

from governance import hookimpl

GOVERNANCE_HOOK_API = (1, 0)


def _classes():
    import numpy as np

    from governance import Explanation, Method, MethodConfig

    class OcclusionConfig(MethodConfig):
        n_samples: int = 8
        target: int | None = None

    class Occlusion(Method):
        """Occlusion sensitivity: the drop of the target output when one feature is set to the baseline."""

        name = "occlusion"
        version = "0.1.0"
        title = "Occlusion sensitivity"
        Config = OcclusionConfig

        def explain(self, ctx, **kwargs):
            X = ctx.data.X[: ctx.config.n_samples]
            base = ctx.data.baseline
            out = ctx.model.predict(X)
            target = out.argmax(1) if ctx.config.target is None else np.full(len(X), ctx.config.target)
            n, d = len(X), int(np.prod(X.shape[1:]))
            flat = X.reshape(n, d)
            masked = np.repeat(flat[:, None, :], d, axis=1)
            idx = np.arange(d)
            masked[:, idx, idx] = base.reshape(-1)[idx]
            scores = ctx.model.predict(masked.reshape(n * d, *X.shape[1:])).reshape(n, d, -1)
            attr = out[np.arange(n), target][:, None] - scores[np.arange(n), :, target]
            plt = __import__("governance.contract.figures", fromlist=["pyplot"]).pyplot()
            fig, ax = plt.subplots(figsize=(5, 2.5))
            ax.bar(range(d), np.abs(attr).mean(0))
            ax.set_title("mean |occlusion| per feature")
            path = ctx.save_figure(fig, "occlusion")
            return Explanation(method=self.name, summary="occlusion sensitivity computed",
                               metrics={"mean_abs_attribution": float(np.abs(attr).mean())},
                               arrays={"attributions": attr.reshape(X.shape), "target": target},
                               figures={"occlusion": path})

    class Crash(Method):
        name = "crash"
        version = "0.0.1"
        title = "Always crashes"

        def explain(self, ctx, **kwargs):
            raise RuntimeError("deliberate failure inside the method")

    return Occlusion, Crash


@hookimpl
def register_methods(register):
    for cls in _classes():
        register(cls)
