// Who is signed in, as the server says (GET /api/v1/session). The secret lives only in
// the HttpOnly cookie.
import { api, messageOf, onSessionExpired, setCsrfToken, type SessionInfo } from './api/client';

type State = 'checking' | 'signed-out' | 'signed-in';

class SessionState {
  state = $state<State>('checking');
  info = $state<SessionInfo | null>(null);
  /** Why the user is at the sign-in form (an expired session, a sign-out). */
  notice = $state('');

  constructor() {
    onSessionExpired(() => {
      if (this.state === 'signed-in') {
        this.notice = 'Your session has ended. Sign in again; unsaved edits are kept.';
      }
      this.set(null);
    });
  }

  private set(info: SessionInfo | null) {
    this.info = info;
    setCsrfToken(info?.csrf_token ?? '');
    this.state = info ? 'signed-in' : 'signed-out';
  }

  async check() {
    const { data } = await api.GET('/api/v1/session');
    this.set(data ?? null);
  }

  /** Returns an error message, or '' when signed in. */
  async signIn(token: string): Promise<string> {
    const { data, error, response } = await api.POST('/api/v1/sessions', { body: { token } });
    if (!data) {
      return response.status === 401
        ? 'That token is not valid. Check it and try again.'
        : messageOf(error, response);
    }
    this.notice = '';
    this.set(data);
    return '';
  }

  async signOut() {
    await api.DELETE('/api/v1/session');
    this.notice = 'Signed out.';
    this.set(null);
  }
}

export const session = new SessionState();
