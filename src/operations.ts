/** Registers every operation and its steps: a plan file may name any of them. */
import './backup/steps.js';
import './backup/restore.js';
import './upgrade/steps.js';
import './wal/steps.js';
import './tune/steps.js';
import './tablespaces/steps.js';
import './replica/steps.js';
