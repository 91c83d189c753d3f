import { DomainError } from '../domain-error.ts';

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/g;

/**
 * One query parameter as text: absent is ''. Given twice it is refused: which one would count?
 * (Taking neither showed an unfiltered listing under a form that looked filtered.)
 */
export function queryText(value: unknown, name: string): string {
  if (value === undefined) return '';
  if (typeof value !== 'string') {
    throw new DomainError('invalid', `Give "${name}" once.`, { title: 'Invalid filter' });
  }
  return value.trim();
}

/** A query value as the form shows it again after a refusal: one line, no control characters. */
export function echoedQueryText(value: unknown): string {
  const text = Array.isArray(value) ? value.join(', ') : typeof value === 'string' ? value : '';
  return text.replace(CONTROL_CHARACTERS, '').slice(0, 200);
}
