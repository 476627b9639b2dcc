export { main, reportError, EXIT_OK, EXIT_USER_ERROR, EXIT_USAGE } from './main.js';
export { BaseCommand } from './base.js';
