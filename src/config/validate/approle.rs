//! `vault_approle_secret_id`.

use toml::Spanned;

use super::vault::DEFAULT_APPROLE_MOUNT;
use super::Validator;
use crate::config::model::*;
use crate::config::raw::*;

impl Validator<'_> {
    pub(super) fn approle_secret_id(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawAppRoleSecretId>,
    ) -> Option<AppRoleSecretIdConfig> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();
        let mount = self.kv_path_or(&key("mount"), &raw.mount, DEFAULT_APPROLE_MOUNT);
        let role_name = self.require(&raw.role_name, &key("role_name"), table, Self::name);
        let secret_id_ttl = match &raw.secret_id_ttl {
            None => Some(None),
            Some(ttl) => self.positive_duration(&key("secret_id_ttl"), ttl).map(Some),
        };
        let secret_id_num_uses = match &raw.secret_id_num_uses {
            None => Some(None),
            Some(uses) => match u32::try_from(*uses.get_ref()) {
                Ok(uses) => Some(Some(uses)),
                Err(_) => {
                    self.bad(
                        &key("secret_id_num_uses"),
                        uses,
                        format!(
                            "must be a whole number >= 0 (0 = unlimited), got {}",
                            uses.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        Some(AppRoleSecretIdConfig {
            mount: mount?,
            role_name: role_name?,
            secret_id_ttl: secret_id_ttl?,
            secret_id_num_uses: secret_id_num_uses?,
        })
    }
}
