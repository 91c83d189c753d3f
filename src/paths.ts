import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The project root (the folder with package.json), found from this file, so that views,
 * migrations and public assets resolve the same from `src/` (tsx) and from `dist/src/` (built).
 */
function findRoot(): string {
  let directory = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(directory, 'package.json'))) {
    const parent = path.dirname(directory);
    if (parent === directory) throw new Error('project root (package.json) not found');
    directory = parent;
  }
  return directory;
}

export const projectRoot = findRoot();

export function projectPath(...parts: string[]): string {
  return path.join(projectRoot, ...parts);
}
