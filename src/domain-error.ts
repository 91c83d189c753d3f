/**
 * What went wrong, in the domain's own words. Domain code throws these and knows nothing of
 * HTTP; the web layer maps each kind to a status code in one place (web/errors.ts).
 */
export type DomainErrorKind =
  | 'invalid' // the input is malformed
  | 'not_found' // no such thing, or not yours to see
  | 'gone' // it existed and has ended
  | 'conflict' // the state does not allow it now
  | 'too_large'
  | 'unsupported' // e.g. not an image format we accept
  | 'rate_limited'
  | 'unavailable'; // a part we depend on is down

export class DomainError extends Error {
  override name = 'DomainError';

  constructor(
    readonly kind: DomainErrorKind,
    message: string,
    readonly detail: { title?: string; retryAfterSeconds?: number } = {},
  ) {
    super(message);
  }
}
