'use strict';
// p-any's API on the platform's Promise.any, for koa-jwt, which awaits pAny over one promise per
// secret on every request. p-any 2 wraps that one promise in p-some and two p-cancelable layers;
// under load those wrappers outlive young-generation collections and a worker's heap grew to three
// times its size (docs/PERFORMANCE.md, "koa-jwt's p-any"). package.json's "overrides" put this in
// its place for koa-jwt only.
class IterableAggregateError extends AggregateError {
  // koa-jwt rethrows the first error by iterating it, as p-any's AggregateError allows.
  *[Symbol.iterator]() {
    yield* this.errors;
  }
}

function pAny(iterable) {
  return Promise.any(iterable).catch((err) => {
    throw err instanceof AggregateError ? new IterableAggregateError(err.errors, err.message) : err;
  });
}

module.exports = pAny;
module.exports.default = pAny;
module.exports.AggregateError = IterableAggregateError;
